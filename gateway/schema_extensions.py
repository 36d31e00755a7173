"""Teach drf-spectacular our two authentication schemes."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "gateway.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "API client key: `Authorization: Bearer oz_…`"}


class UserTokenScheme(OpenApiAuthenticationExtension):
    target_class = "gateway.auth.UserTokenAuthentication"
    name = "UserToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Reviewer or operator token: `Authorization: Token ozu_…`",
        }
