"""Forms of the classification pages. Image checks live in the service, not here."""

from django import forms
from django.conf import settings

from catalog.imaging import SUPPORTED_FORMATS_TEXT
from catalog.models import CarModel
from classifier.selectors.classifications import car_model_choices_by_make


class UploadForm(forms.Form):
    image = forms.FileField(
        label="Photo of a car",
        help_text=f"{SUPPORTED_FORMATS_TEXT}, up to {settings.CARSITE_UPLOAD_MAX_BYTES // (1024 * 1024)} MB.",
        error_messages={"required": "Choose a photo to upload.", "empty": "The file is empty."},
        widget=forms.ClearableFileInput(
            attrs={
                # image/* lets phones offer the camera as well as the photo library.
                "accept": "image/*",
                "data-max-bytes": settings.CARSITE_UPLOAD_MAX_BYTES,
                "data-min-side": settings.CARSITE_IMAGE_MIN_SIDE,
            }
        ),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Empty files must reach the service so the visitor gets the same message as API users.
        self.fields["image"].allow_empty_file = True


class FeedbackForm(forms.Form):
    CONFIRM = "confirm"
    CORRECT = "correct"

    action = forms.ChoiceField(choices=[(CONFIRM, "That's right"), (CORRECT, "It's another model")])
    car_model = forms.TypedChoiceField(label="The right model", coerce=int, required=False, empty_value=None)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["car_model"].choices = [("", "Choose the model…"), *car_model_choices_by_make()]

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("action") == self.CORRECT:
            car_model_id = cleaned.get("car_model")
            if car_model_id is None:
                self.add_error("car_model", "Pick the model the photo shows.")
            else:
                cleaned["car_model_obj"] = CarModel.objects.filter(pk=car_model_id).first()
                if cleaned["car_model_obj"] is None:
                    self.add_error("car_model", "That model is not in the catalog.")
        return cleaned
