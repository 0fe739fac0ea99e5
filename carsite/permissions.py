from rest_framework.permissions import SAFE_METHODS, DjangoModelPermissions
from rest_framework.request import Request


class StaffModelPermissionsOrReadOnly(DjangoModelPermissions):
    """Anyone may read; a write needs what the admin needs: a staff account with the model's add/change/delete
    permission (a staff flag alone is not enough)."""

    def has_permission(self, request: Request, view: object) -> bool:
        if request.method in SAFE_METHODS:
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff) and super().has_permission(request, view)
