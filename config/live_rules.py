"""Live rules: a ``rules:`` document layered over the settings' rules while the flow runs.

``rules_file`` names a YAML document holding a ``rules:`` section in the
shape of config/defaults.yaml. It is layered key by key over the settings'
``rules:`` (so it only needs the keys it changes) and validated with the same
pydantic models as the settings, so a threshold that would stop a start also
stops a reload. Rules that shape operator state (window and hop lengths,
:data:`~config.settings.RESTART_ONLY_RULES`) are compared with the rules in
force: restating them unchanged is fine, changing them is refused with a
message that says a restart is needed.

Reading the document (file, S3) is the connectors' job
(connectors/reference/); this module only turns its text into rules.
"""

from __future__ import annotations

import hashlib
import json

import yaml
from pydantic import ValidationError

from config.loader import deep_merge, load_yaml
from config.settings import RESTART_ONLY_RULES, RuleSettings

VERSION_LENGTH = 12


class RulesRefused(ValueError):
    """A rules document that cannot be used; ``key`` is the dotted key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def rules_version(rules: RuleSettings) -> str:
    """A short hash of the rules: equal rules give the same version in every process."""
    blob = json.dumps(rules.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:VERSION_LENGTH]


def parse_rules_document(text: str | bytes, base: RuleSettings) -> RuleSettings:
    """The settings' rules ``base`` with the document's ``rules:`` section layered over them.

    :raises RulesRefused: the document is not YAML, holds anything but a
        ``rules:`` mapping, or the layered rules fail validation (the key
        names the first offending setting, as ``rules.failure_rate.threshold_percent``).
    """
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise RulesRefused("rules_file", f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesRefused("rules_file", "must hold a mapping with a rules: section")
    extra = sorted(str(k) for k in data if k != "rules")
    if extra:
        raise RulesRefused(extra[0], "unknown key: a rules file holds only a rules: section")
    section = data.get("rules") or {}
    if not isinstance(section, dict):
        raise RulesRefused("rules", "must be a mapping")
    merged = deep_merge(base.model_dump(), section)
    try:
        return RuleSettings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(["rules", *(str(p) for p in err["loc"])])
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key (check the spelling against config/defaults.yaml)"
        raise RulesRefused(key, reason) from None


def check_live_change(in_force: RuleSettings, new: RuleSettings) -> None:
    """Refuse a change to a rule that shapes operator state.

    :raises RulesRefused: naming the first such key, with "restart needed".
    """
    for section, name in RESTART_ONLY_RULES:
        old_value = getattr(getattr(in_force, section), name)
        new_value = getattr(getattr(new, section), name)
        if old_value != new_value:
            raise RulesRefused(
                f"rules.{section}.{name}",
                f"changed from {old_value} to {new_value} while running: restart needed "
                "(it shapes window state; change it in the settings and restart)",
            )
