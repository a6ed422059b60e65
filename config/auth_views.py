"""Sign-up and token endpoints (the only ones open without a token, hence throttled)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate, get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.accounts import user_register
from core.api import AuthRateThrottle, StrictFieldsMixin, error_responses


class RegisterSerializer(StrictFieldsMixin, serializers.Serializer):
    username = serializers.RegexField(
        r"^[\w.@+-]+$", max_length=150, help_text="Letters, digits and @/./+/-/_ only."
    )
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(write_only=True, max_length=128, trim_whitespace=False)

    def validate_username(self, value: str) -> str:
        if get_user_model().objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("This username is taken.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        candidate = get_user_model()(username=attrs["username"], email=attrs["email"])
        try:
            password_validation.validate_password(attrs["password"], user=candidate)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": exc.messages}) from exc
        return attrs


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()


class TokenRequestSerializer(StrictFieldsMixin, serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Bearer <token>`.")


class RegisterView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AuthRateThrottle]

    @extend_schema(
        tags=["auth"],
        auth=[],
        request=RegisterSerializer,
        examples=[
            OpenApiExample(
                "Sign-up",
                request_only=True,
                value={
                    "username": "alice",
                    "email": "alice@example.com",
                    "password": "a-long-unusual-passphrase",
                },
            )
        ],
        responses={201: UserSerializer, **error_responses(400, 409, 429)},
        summary="Create an account",
        description=(
            "Usernames and emails are unique whatever their case: `Foo@X.com` is taken once "
            "`foo@x.com` is (400 on the field)."
        ),
    )
    def post(self, request: Request) -> Response:
        data = RegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_register(**data.validated_data)
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AuthRateThrottle]

    @extend_schema(
        tags=["auth"],
        auth=[],
        request=TokenRequestSerializer,
        examples=[
            OpenApiExample(
                "Log in",
                request_only=True,
                value={"username": "alice", "password": "a-long-unusual-passphrase"},
            )
        ],
        responses={200: TokenSerializer, **error_responses(400, 429)},
        summary="Exchange username and password for an API token",
    )
    def post(self, request: Request) -> Response:
        data = TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request=request._request, **data.validated_data)
        if user is None:
            raise exceptions.ValidationError(
                {"non_field_errors": ["Unable to log in with the provided credentials."]}
            )
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})
