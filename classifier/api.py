"""Classification REST API: upload photos (anyone, throttled) and read the results.

``POST /api/v1/classifications/`` takes one or more multipart parts named ``image`` and answers
``202 Accepted``: for one photo, the job with a ``Location`` header; for several (a batch, up to
``CARSITE_CLASSIFY_BATCH_LIMIT``), ``{"results": [job, …]}`` in upload order with the ``Location``
of the first. A batch is all or nothing: one bad photo rejects it and nothing is stored. Every photo
counts against the caller's upload allowance, shared with the upload page (``429`` beyond it), and a
request body over ``CARSITE_REQUEST_MAX_BYTES`` is refused unread (``413``). Errors are
``{"error": {"code", "message"}}``.
"""

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter

from carsite.errors import error_body
from carsite.schema import ErrorSerializer
from catalog.imaging import ImageRejected
from classifier.ownership import visitor_owner_token
from classifier.selectors.classifications import classification_queryset, with_predictions
from classifier.serializers import ClassificationSerializer, UploadRequestSerializer, accepted_job_data
from classifier.services.intake import Upload, batch_size_check, classification_create_batch, upload_read
from classifier.services.throttling import UploadThrottled, uploads_throttle

BatchSerializer = inline_serializer("ClassificationBatch", {"results": ClassificationSerializer(many=True)})


def _error(code: str, message: str, http_status: int) -> Response:
    return Response(error_body(code, message), status=http_status)


class ClassificationViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = classification_queryset()
    serializer_class = ClassificationSerializer
    permission_classes = [AllowAny]
    parser_classes = [MultiPartParser, FormParser]
    lookup_value_regex = r"[^/]+"  # any id reaches the view's 404 (in the API's error shape), not the router's
    # Listing is left out on purpose: jobs are private to whoever holds their UUID.

    @extend_schema(
        summary="Classify one or more photos",
        description=__doc__,
        request={"multipart/form-data": UploadRequestSerializer},
        responses={
            202: OpenApiResponse(
                ClassificationSerializer,
                description="Queued. One photo: the job. Several: {'results': [...]} (see ClassificationBatch). "
                "The Location header points at the (first) job.",
            ),
            400: OpenApiResponse(ErrorSerializer, description="Not an acceptable image; nothing was stored."),
            413: OpenApiResponse(ErrorSerializer, description="The request body is over the size limit."),
            429: OpenApiResponse(
                ErrorSerializer, description="Too many photos from this client (a batch counts each); retry later."
            ),
            503: OpenApiResponse(ErrorSerializer, description="The task queue is unavailable; retry later."),
        },
        examples=[
            OpenApiExample(
                "Rejected",
                value={"error": {"code": "not_an_image", "message": "The file is not an image we can read."}},
                response_only=True,
                status_codes=["400"],
            )
        ],
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        files = request.FILES.getlist("image")
        if not files:
            return _error("missing_image", "Send the photo as a multipart part named 'image'.", 400)
        try:
            batch_size_check(len(files))  # before the throttle: a refused batch takes none of the allowance
        except ImageRejected as exc:
            return _error(exc.code, str(exc), 400)
        try:
            uploads_throttle(request, len(files))
        except UploadThrottled as exc:
            raise exceptions.Throttled(wait=exc.wait) from exc
        owner_token = visitor_owner_token(request)
        try:
            uploads: list[Upload] = [upload_read(file) for file in files]
            created = classification_create_batch(uploads, owner_token=owner_token, user=request.user)
        except ImageRejected as exc:
            return _error(exc.code, str(exc), 400)
        # Freshly created jobs have no result yet: answer with them as they are, without re-reading.
        jobs = [accepted_job_data(job, request) for job in created]
        body: Any = jobs[0] if len(files) == 1 else {"results": jobs}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": jobs[0]["url"]})

    @extend_schema(
        summary="A classification job: its status and, once done, the result",
        responses={200: ClassificationSerializer, 404: OpenApiResponse(ErrorSerializer)},
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        job = with_predictions(self.get_object())
        return Response(self.get_serializer(job).data)


def register(router: DefaultRouter) -> None:
    router.register("classifications", ClassificationViewSet, basename="classification")
