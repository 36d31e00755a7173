"""Who may call what. API clients are ApiClient principals; people are Django users whose
rights come from Django permissions (granted through the groups in gateway.roles)."""
from rest_framework.permissions import BasePermission

from .models import ApiClient


def is_api_client(principal) -> bool:
    return isinstance(principal, ApiClient)


def is_person(principal) -> bool:
    return bool(principal and principal.is_authenticated and not is_api_client(principal))


class IsApiClient(BasePermission):
    message = "This endpoint is for API clients (Authorization: Bearer <api key>)."

    def has_permission(self, request, view):
        return is_api_client(request.user)


class HasDjangoPerm(BasePermission):
    """A person holding every permission named in the view's `required_perms`."""

    message = "You do not have permission to do this."

    def has_permission(self, request, view):
        user = request.user
        return is_person(user) and user.has_perms(getattr(view, "required_perms", ()))


class IsApiClientOrHasPerm(BasePermission):
    message = "You do not have permission to do this."

    def has_permission(self, request, view):
        user = request.user
        if is_api_client(user):
            return True
        return is_person(user) and user.has_perms(getattr(view, "required_perms", ()))
