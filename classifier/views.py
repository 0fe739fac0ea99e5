"""Pages for classifying a photo. Thin: they call the classification services and selectors."""

import math
import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from catalog import selectors as catalog_selectors
from catalog.imaging import ImageRejected
from classifier.forms import FeedbackForm, UploadForm
from classifier.models import Classification
from classifier.ownership import is_visitor_owner, visitor_owner_token
from classifier.selectors import classifications as selectors
from classifier.selectors.registry import supported_car_models
from classifier.services.feedback import FeedbackRefused, feedback_submit
from classifier.services.intake import classification_create, upload_read
from classifier.services.throttling import FeedbackRateThrottle, UploadThrottled, uploads_throttle


def _upload_context(request: HttpRequest, form: UploadForm) -> dict:
    return {
        "form": form,
        "recent": selectors.classifications_for_owner(visitor_owner_token(request)),
        "classifier_available": selectors.classifier_available(),
    }


@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "classifier/upload.html", _upload_context(request, UploadForm()))
    form = UploadForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            uploads_throttle(request, 1)
        except UploadThrottled as exc:
            wait = math.ceil(exc.wait or 60)
            form.add_error("image", f"You have uploaded too many photos for now; try again in {wait} seconds.")
            response = render(request, "classifier/upload.html", _upload_context(request, form), status=429)
            response["Retry-After"] = str(wait)
            return response
        try:
            classification = classification_create(
                upload_read(form.cleaned_data["image"]),
                owner_token=visitor_owner_token(request, create=True),
                user=request.user,
            )
        except ImageRejected as exc:
            form.add_error("image", str(exc))
        else:
            return redirect("classifier:result", pk=classification.pk)
    return render(request, "classifier/upload.html", _upload_context(request, form), status=400)


def _get_classification(pk: uuid.UUID) -> Classification:
    try:
        return selectors.classification_get(pk)
    except Classification.DoesNotExist as exc:
        raise Http404("No such classification.") from exc


def _may_give_feedback(request: HttpRequest, classification: Classification) -> bool:
    if request.user.is_authenticated and (request.user.is_staff or classification.user_id == request.user.pk):
        return True
    return is_visitor_owner(request, classification.owner_token)


def _result_context(request: HttpRequest, classification: Classification, feedback_form=None) -> dict:
    result = selectors.classification_result(classification)
    return {
        "result": result,
        "c": classification,
        "can_give_feedback": _may_give_feedback(request, classification),
        "feedback_form": feedback_form or FeedbackForm(),
        "status_url": reverse("classification-detail", kwargs={"pk": classification.pk}),
        "fragment_url": reverse("classifier:result-fragment", kwargs={"pk": classification.pk}),
    }


@require_GET
def supported_models(request: HttpRequest) -> HttpResponse:
    """The car models the active classifier can name; the whole catalog while none is active."""
    recognised = supported_car_models().values_list("pk", flat=True)
    supported = catalog_selectors.supported_models_for_page(recognised)
    return render(request, "catalog/supported_models.html", {"supported": supported})


@require_GET
def result(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    classification = _get_classification(pk)
    return render(request, "classifier/result.html", _result_context(request, classification))


@require_GET
def result_fragment(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """The result panel alone: the page swaps it in when polling sees the job finish."""
    classification = _get_classification(pk)
    return render(request, "classifier/_result.html", _result_context(request, classification))


@require_POST
def feedback(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    classification = _get_classification(pk)
    throttle = FeedbackRateThrottle()
    if not throttle.allow_request(request, None):
        minutes = max(1, round((throttle.wait() or 60) / 60))
        messages.error(request, f"Too many answers from you in a short time; please try again in {minutes} min.")
        response = render(request, "classifier/result.html", _result_context(request, classification), status=429)
        response["Retry-After"] = str(minutes * 60)
        return response
    if not _may_give_feedback(request, classification):
        return HttpResponseForbidden("Only the visitor who uploaded the photo can give feedback on it.")
    form = FeedbackForm(request.POST)
    if form.is_valid():
        confirm = form.cleaned_data["action"] == FeedbackForm.CONFIRM
        try:
            feedback_submit(classification, car_model=form.cleaned_data.get("car_model_obj"), confirm=confirm)
        except FeedbackRefused as exc:
            # The job's state refuses feedback whatever was sent; the form may not even be on the page.
            messages.error(request, " ".join(exc.messages))
            return render(request, "classifier/result.html", _result_context(request, classification), status=409)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Thank you! Your answer helps the classifier learn.")
            return redirect("classifier:result", pk=classification.pk)
    return render(request, "classifier/result.html", _result_context(request, classification, form), status=400)
