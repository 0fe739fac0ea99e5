// Upload page: drag and drop, a preview, and the same type/size checks the server makes
// (the server always checks again; these only save a round trip).
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;
  var input = form.querySelector('input[type="file"]');
  var zone = document.getElementById("dropzone");
  var preview = document.getElementById("dropzone-preview");
  var errorBox = document.getElementById("upload-error");
  var submit = document.getElementById("upload-submit");
  var maxBytes = parseInt(input.dataset.maxBytes || "0", 10);
  var minSide = parseInt(input.dataset.minSide || "0", 10);
  var accepted = ["image/jpeg", "image/png", "image/webp"];

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function check(file) {
    if (!file) return "Choose a photo to upload.";
    if (file.size === 0) return "The file is empty.";
    if (file.type && accepted.indexOf(file.type) === -1) {
      return "That file is not a JPEG, PNG or WebP photo.";
    }
    if (maxBytes && file.size > maxBytes) {
      return "The file is " + (file.size / 1048576).toFixed(0) + " MB; the limit is " +
        (maxBytes / 1048576).toFixed(0) + " MB.";
    }
    return "";
  }

  function showPreview(file) {
    if (!file || !window.URL || !file.type || file.type.indexOf("image/") !== 0) {
      preview.hidden = true;
      return;
    }
    preview.onload = function () {
      if (minSide && (preview.naturalWidth < minSide || preview.naturalHeight < minSide)) {
        showError("The image is " + preview.naturalWidth + "×" + preview.naturalHeight +
          " pixels; it must be at least " + minSide + " pixels on each side.");
      }
    };
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  }

  input.addEventListener("change", function () {
    var file = input.files && input.files[0];
    showError(check(file));
    showPreview(file);
  });

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.remove("dragging");
    });
  });
  zone.addEventListener("drop", function (event) {
    var files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    input.files = files;
    input.dispatchEvent(new Event("change"));
  });

  form.addEventListener("submit", function (event) {
    var message = check(input.files && input.files[0]);
    if (message) {
      event.preventDefault();
      showError(message);
      return;
    }
    submit.disabled = true;
    submit.textContent = "Uploading…";
  });
})();
