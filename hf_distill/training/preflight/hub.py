"""Preflight check of the Hub: with ``--push_to_hub``, a token that may write to the target repository."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hf_distill.training.preflight.report import FAIL, PASS, CheckResult, PreflightContext, error_summary


def _write_access(whoami: dict, namespace: str) -> bool:
    """Whether the token ``whoami`` describes may write repositories of ``namespace`` (its user or an org)."""
    token = (whoami.get("auth") or {}).get("accessToken") or {}
    names = {whoami.get("name")} | {org.get("name") for org in whoami.get("orgs") or []}
    role = token.get("role")
    if role == "write":
        return namespace in names
    if role == "fineGrained":
        for scope in (token.get("fineGrained") or {}).get("scoped") or []:
            if (scope.get("entity") or {}).get("name") == namespace and "repo.write" in scope.get("permissions", []):
                return True
    return False


def check_hub(ctx: PreflightContext) -> Iterable[CheckResult]:
    """With ``--push_to_hub``: a token, and write access to ``--hub_model_id``'s namespace."""
    args = ctx.args
    if not args.push_to_hub:
        return
    from huggingface_hub import HfApi, get_token

    token = args.hub_token or get_token()
    if token is None:
        yield CheckResult("hub", FAIL, "--push_to_hub without a Hugging Face token",
                          "run `hf auth login` (a token with write access) or set HF_TOKEN")
        return
    try:
        whoami = HfApi().whoami(token=token)
    except Exception as error:  # noqa: BLE001
        yield CheckResult("hub", FAIL, f"the token was refused: {error_summary(error)}",
                          "run `hf auth login` again; the Hub must be reachable (not HF_HUB_OFFLINE)")
        return
    repo_id = args.hub_model_id or f"{whoami['name']}/{Path(args.output_dir).resolve().name}"
    namespace = repo_id.split("/")[0] if "/" in repo_id else whoami["name"]
    if _write_access(whoami, namespace):
        yield CheckResult("hub", PASS, f"logged in as {whoami['name']}, write access to {repo_id}")
    else:
        yield CheckResult("hub", FAIL, f"logged in as {whoami['name']}: the token cannot write to {repo_id}",
                          f"use a token with write access to {namespace} (`hf auth login`), or a --hub_model_id in "
                          "your namespace")
