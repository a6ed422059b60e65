"""The operators' user admin: emails unique whatever their case, as at sign-up.

Django's own user admin accepts any email (and none on the add page), so an operator could give
two accounts one address, which sign-up refuses (config.accounts). The user model is Django's,
so the rule lives in the admin's forms."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm

User = get_user_model()


def _email_unique(form: forms.ModelForm) -> str:
    email = form.cleaned_data.get("email", "").strip()
    others = User.objects.filter(email__iexact=email).exclude(pk=form.instance.pk)
    if email and others.exists():
        raise forms.ValidationError("Another account has this email (emails ignore case).")
    return email


class UserAddForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")

    def clean_email(self) -> str:
        return _email_unique(self)


class UserEditForm(UserChangeForm):
    def clean_email(self) -> str:
        return _email_unique(self)


class PlatformUserAdmin(UserAdmin):
    form = UserEditForm
    add_form = UserAddForm
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "email", "password1", "password2")}),
    )


admin.site.unregister(User)
admin.site.register(User, PlatformUserAdmin)
