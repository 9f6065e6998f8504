"""The workload form: flat HTML fields ⇄ the wire dict, validated by `workloads/spec.py` only.

The form never judges a spec itself. It turns its fields into the wire dict the SDK would send
(`wire_from_fields`), hands that to `spec.validate`, and puts each error on the field its path
names (`field_for_path`), so the form and the API cannot disagree. `WorkloadForm.from_wire` feeds
a wire dict verbatim through the same path: the bad-spec table uses it for shapes an HTML form
cannot produce (`model` instead of `model_name`, unknown keys, numbers where strings belong).
"""
from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from django import forms
from django.core.exceptions import ValidationError

from inferencekey_web.lib.slugs import MAX_SLUG_LENGTH, canonical_slug

from . import policies
from . import spec as specs

NON_FIELD = None
_TOP_LEVEL = {"name", "slug", "description", "model_name", "backend", "task_type", "worker_id",
              "gpu_resource_id", "execution_policy"}
_CONFIG = {"config": "command", "config.command": "command", "config.vllm_version": "vllm_version"}
_POLICY_CONFIG = {
    "": "execution_policy",  # the config as a whole (missing, not an object, cron and window both given)
    "replicas": "replicas",
    "cron": "cron",
    "timezone": "timezone",
    "duration_minutes": "duration_minutes",
    "window": "window",
    "min_workers": "min_workers",
    "max_workers": "max_workers",
    "max_hourly_cost_usd": "max_hourly_cost_usd",
    "target_inflight_per_replica": "target_inflight_per_replica",
    "scale_down_delay_s": "scale_down_delay_s",
    "workers": "worker_source",
    "workers.source": "worker_source",
    "workers.cloud_pool": "gpu_pool",
    "workers.cloud_pool.gpu_pool": "gpu_pool",
    "gpu_pool": "gpu_pool",  # the legacy root pool
    "workers.cloud_pool.max_hourly_cost_usd": "pool_max_hourly_cost_usd",
    "workers.cloud_pool.max_instances": "max_instances",
    "workers.cloud_pool.allowed_cuda_versions": "cuda_version",
    "workers.private_worker_ids": "private_worker_ids",
}
_INDEX = re.compile(r"\[\d+\]$")


def slug_from_name(name: str) -> str:
    """The slug a blank slug field becomes: the SDK's canonicalisation of the name, cut to fit."""
    return canonical_slug(name or "")[:MAX_SLUG_LENGTH].rstrip("-")


def field_for_path(path: str) -> str | None:
    """The form field showing the spec error at `path` (None: shown above the form).

    `execution_policy_config.workers.cloud_pool.gpu_pool[1]` → `gpu_pool`: list items land on
    the field holding the list; the message keeps the full path so the item is named."""
    base = _INDEX.sub("", path)
    if base in _TOP_LEVEL:
        return base
    if base in _CONFIG:
        return _CONFIG[base]
    if base == "execution_policy_config" or base.startswith("execution_policy_config."):
        return _POLICY_CONFIG.get(base[len("execution_policy_config"):].lstrip("."), NON_FIELD)
    return NON_FIELD


# --- fields ⇄ wire ------------------------------------------------------------------------


def _text(value) -> str:
    return "" if value is None else str(value)


def _number(value) -> str:
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


def fields_from_wire(wire: dict | None) -> dict:
    """Form data (strings and lists, as a browser would post them) for a wire dict."""
    w = wire if isinstance(wire, dict) else {}
    config = w.get("config") if isinstance(w.get("config"), dict) else {}
    pc = w.get("execution_policy_config") if isinstance(w.get("execution_policy_config"), dict) else {}
    kind = w.get("execution_policy") if w.get("execution_policy") in policies.POLICIES else "fixed"
    data = {
        "name": _text(w.get("name")), "slug": _text(w.get("slug")), "description": _text(w.get("description")),
        "model_name": _text(w.get("model_name")), "backend": _text(w.get("backend")),
        "task_type": _text(w.get("task_type") or "text2text"), "command": _text(config.get("command")),
        "vllm_version": _text(config.get("vllm_version")), "execution_policy": kind,
        "worker_id": _text(w.get("worker_id")), "gpu_resource_id": _text(w.get("gpu_resource_id")),
    }
    if kind == "fixed":
        data["replicas"] = _number(pc.get("replicas", 1 if not w.get("execution_policy_config") else None))
    elif kind == "scheduled":
        data.update(
            replicas=_number(pc.get("replicas")), schedule_kind="window" if "window" in pc else "cron",
            cron=_text(pc.get("cron")), timezone=_text(pc.get("timezone")),
            duration_minutes=_number(pc.get("duration_minutes")), window=_text(pc.get("window")),
        )
    else:
        workers = pc.get("workers") if isinstance(pc.get("workers"), dict) else {}
        pool = workers.get("cloud_pool") if isinstance(workers.get("cloud_pool"), dict) else {}
        gpu_pool = pool.get("gpu_pool", pc.get("gpu_pool")) or []
        cuda = pool.get("allowed_cuda_versions") or [""]
        data.update(
            min_workers=_number(pc.get("min_workers")), max_workers=_number(pc.get("max_workers")),
            max_hourly_cost_usd=_number(pc.get("max_hourly_cost_usd")),
            worker_source=_text(workers.get("source") or "cloud"),
            gpu_pool=[_text(g) for g in gpu_pool] if isinstance(gpu_pool, list) else [],
            cuda_version=_text(cuda[0]) if isinstance(cuda, list) else "",
            pool_max_hourly_cost_usd=_number(pool.get("max_hourly_cost_usd")),
            max_instances=_number(pool.get("max_instances")),
            private_worker_ids=[_text(i) for i in (workers.get("private_worker_ids") or [])]
            if isinstance(workers.get("private_worker_ids"), list) else [],
            target_inflight_per_replica=_number(pc.get("target_inflight_per_replica")),
            scale_down_delay_s=_number(pc.get("scale_down_delay_s")),
        )
    return data


def _present(d: dict, out: dict, *pairs: tuple[str, str]) -> None:
    for field, key in pairs:
        if d.get(field) not in (None, ""):
            out[key] = d[field]


def policy_config_from_fields(kind: str, d: dict) -> dict:
    """`execution_policy_config` for `kind` from cleaned form values; empty fields are left out
    so the validator's defaults and "is required" messages apply."""
    out: dict = {}
    if kind == "fixed":
        _present(d, out, ("replicas", "replicas"))
    elif kind == "scheduled":
        if d.get("schedule_kind") == "window":
            out["window"] = d.get("window") or ""
        else:
            out["cron"] = d.get("cron") or ""
            _present(d, out, ("timezone", "timezone"), ("duration_minutes", "duration_minutes"))
        _present(d, out, ("replicas", "replicas"))
    elif kind == "autoscaling":
        _present(d, out, ("min_workers", "min_workers"), ("max_workers", "max_workers"),
                 ("max_hourly_cost_usd", "max_hourly_cost_usd"))
        source = d.get("worker_source") or "cloud"
        workers: dict = {"source": source}
        if source == "private":
            workers["private_worker_ids"] = list(d.get("private_worker_ids") or [])
        else:
            pool: dict = {"gpu_pool": list(d.get("gpu_pool") or [])}
            _present(d, pool, ("pool_max_hourly_cost_usd", "max_hourly_cost_usd"), ("max_instances", "max_instances"))
            if d.get("cuda_version"):
                pool["allowed_cuda_versions"] = [d["cuda_version"]]
            workers["cloud_pool"] = pool
        out["workers"] = workers
        _present(d, out, ("target_inflight_per_replica", "target_inflight_per_replica"),
                 ("scale_down_delay_s", "scale_down_delay_s"))
    return out


def wire_from_fields(d: dict) -> dict:
    """The wire dict (all WIRE_FIELDS) for cleaned form values."""
    config = {}
    _present(d, config, ("command", "command"), ("vllm_version", "vllm_version"))
    kind = d.get("execution_policy") or "fixed"
    return {
        "name": d.get("name") or "",
        "slug": d.get("slug") or "",
        "description": d.get("description") or None,
        "model_name": d.get("model_name") or "",
        "backend": d.get("backend") or "",
        "task_type": d.get("task_type") or "text2text",
        "config": config or None,
        "execution_policy": kind,
        "execution_policy_config": policy_config_from_fields(kind, d),
        "worker_id": d.get("worker_id") or None,
        "gpu_resource_id": d.get("gpu_resource_id") or None,
    }


# --- the form -----------------------------------------------------------------------------


class AnyChoiceField(forms.ChoiceField):
    """A select whose choices guide the user; the spec, not the choice list, says what is valid."""

    def valid_value(self, value) -> bool:
        return True


class AnyMultipleChoiceField(forms.MultipleChoiceField):
    def valid_value(self, value) -> bool:
        return True


def _int(label: str, **kw) -> forms.IntegerField:
    return forms.IntegerField(label=label, required=False, **kw)


class WorkloadForm(forms.Form):
    name = forms.CharField(required=False, max_length=200)
    slug = forms.CharField(required=False, max_length=200,
                           help_text="Lowercase letters, digits and dashes; part of the endpoint URL.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    model_name = forms.CharField(label="Model", required=False, max_length=255,
                                 help_text="As the engine names it, e.g. meta-llama/Llama-3.1-8B-Instruct.")
    backend = AnyChoiceField(choices=[(b, b) for b in specs.BUILTIN_BACKENDS])
    task_type = AnyChoiceField(label="Task type", choices=[(t, t) for t in specs.TASK_TYPES], initial="text2text")
    command = forms.CharField(required=False, help_text="The command that launches the server; the port is injected.")
    vllm_version = forms.CharField(label="vLLM version", required=False, help_text="Optional, e.g. 0.6.3.")

    execution_policy = AnyChoiceField(label="Execution policy", choices=[
        ("fixed", "Fixed replicas"), ("scheduled", "Scheduled"), ("autoscaling", "Autoscaling")], initial="fixed")
    replicas = _int("Replicas", initial=1)
    schedule_kind = forms.ChoiceField(label="Schedule", required=False, initial="window",
                                      choices=[("window", "Weekly window"), ("cron", "Cron")])
    window = forms.CharField(label="Weekly window", required=False, help_text="e.g. Mon-Fri 08:00-20:00 Europe/Madrid")
    cron = forms.CharField(label="Cron", required=False, help_text="5 fields, e.g. 0 2 * * *")
    timezone = forms.CharField(label="Time zone", required=False, help_text="IANA name; UTC when empty.")
    duration_minutes = _int("Active for (minutes)", help_text="After each cron fire; 60 when empty.")

    min_workers = _int("Min workers", initial=0)
    max_workers = _int("Max workers", initial=1)
    max_hourly_cost_usd = forms.FloatField(label="Cost ceiling ($/h)", required=False)
    worker_source = AnyChoiceField(label="Run on", required=False, initial="cloud",
                                   choices=[("cloud", "A cloud GPU pool"), ("private", "Our private workers")])
    cuda_version = AnyChoiceField(label="CUDA version", required=False, choices=[("", "Any")])
    gpu_pool = AnyMultipleChoiceField(label="GPU pool", required=False, widget=forms.CheckboxSelectMultiple)
    pool_max_hourly_cost_usd = forms.FloatField(label="Pool cost ceiling ($/h)", required=False)
    max_instances = _int("Max instances")
    private_worker_ids = AnyMultipleChoiceField(label="Private workers", required=False,
                                                widget=forms.CheckboxSelectMultiple)
    target_inflight_per_replica = _int("Target in-flight requests per replica", help_text="The engine's default when empty: 32 for vLLM and SGLang, 4 for llama.cpp and Ollama, 1 for image and audio models.")
    scale_down_delay_s = _int("Scale-down delay (s)", help_text="300 when empty.")

    worker_id = AnyChoiceField(label="Pin to worker", required=False, choices=[("", "Let the platform choose")])
    gpu_resource_id = AnyChoiceField(label="Pin to GPU", required=False, choices=[("", "Any GPU on the worker")])

    def __init__(self, *args, project=None, current: dict | None = None, ctx: specs.SpecContext | None = None, **kwargs):
        """`current`: the stored wire of the workload being edited (None on create)."""
        if current is not None and "initial" not in kwargs:
            kwargs["initial"] = fields_from_wire(current)
        super().__init__(*args, **kwargs)
        # A blank slug is derived from the name (clean()); the placeholder previews it, and
        # static/js/app.js keeps the preview current as the name is typed.
        self.fields["name"].widget.attrs["data-slug-source"] = "id_slug"
        self.preview_slug(self.data.get("name") if self.is_bound else self.initial.get("name"))
        self.project, self.current = project, current
        self.ctx = ctx
        self.wire_override: dict | None = None
        self.spec_errors: dict[str, list[str]] = {}
        self.wire: dict | None = None  # what will be stored (the merged spec on edit)
        self.patch: dict | None = None  # edit only: the wire keys the user changed
        if project is not None:
            self._load_choices(project)

    def preview_slug(self, name) -> None:
        self.fields["slug"].widget.attrs["placeholder"] = slug_from_name(name) if isinstance(name, str) else ""

    @classmethod
    def from_wire(cls, wire, *, project=None, ctx=None) -> WorkloadForm:
        """A bound form whose spec is `wire`, verbatim: the entry point for wire dicts."""
        form = cls(data=fields_from_wire(wire), project=project, ctx=ctx)
        form.wire_override = wire
        return form

    def _load_choices(self, project) -> None:
        from catalog.offers import cuda_versions, gpu_choices
        from workers.models import Gpu, Worker

        from .services import custom_backends_for

        custom = custom_backends_for(project)
        self.fields["backend"].choices = [(b, b) for b in (*specs.BUILTIN_BACKENDS, *custom)]
        workers = list(Worker.objects.filter(team=project.team).values_list("id", "name"))
        self.fields["private_worker_ids"].choices = [(i, f"{n} ({i})") for i, n in workers]
        self.fields["worker_id"].choices = [("", "Let the platform choose")] + [(i, f"{n} ({i})") for i, n in workers]
        gpus = Gpu.objects.filter(worker__team=project.team).select_related("worker")
        self.fields["gpu_resource_id"].choices = [("", "Any GPU on the worker")] + [
            (g.id, f"{g.name} #{g.index} on {g.worker.name} ({g.id})") for g in gpus]
        self.fields["cuda_version"].choices = [("", "Any")] + [(v, f"CUDA {v}") for v in cuda_versions()]
        self.fields["gpu_pool"].choices = gpu_choices()

    # The current value of a field, bound or initial (templates show sections by it).
    def value_of(self, name: str):
        return self[name].value()

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("slug"):
            # Blank slug: keep the stored one on edit, derive it from the name on create.
            current_slug = (self.current or {}).get("slug")
            cleaned["slug"] = current_slug or slug_from_name(cleaned.get("name") or "")
        if self.wire_override is not None:
            candidate = self.wire_override
        else:
            mine = wire_from_fields(cleaned)
            if self.current is None:
                candidate = mine
            else:
                # Only what the user changed is patched, so untouched fields keep the exact shape
                # the SDK stored (e.g. no policy at all, or the legacy root gpu_pool).
                baseline = wire_from_fields(self._clean_values(fields_from_wire(self.current)))
                self.patch = {k: v for k, v in mine.items() if v != baseline.get(k)}
                candidate = specs.merge_patch(self.current, self.patch)
        try:
            spec = specs.validate(candidate, self.ctx or self._ctx())
        except specs.SpecError as exc:
            self.add_spec_errors(exc.errors)
            return cleaned
        self.wire = spec.wire()
        return cleaned

    def _ctx(self) -> specs.SpecContext:
        from .services import spec_context

        return spec_context(self.project) if self.project is not None else specs.SpecContext()

    def _clean_values(self, data: dict) -> dict:
        values = {}
        for name, field in self.fields.items():
            try:
                values[name] = field.clean(field.widget.value_from_datadict(data, None, name))
            except ValidationError:
                values[name] = None
        return values

    def add_spec_errors(self, errors: dict[str, list[str]]) -> None:
        """Put each spec error on its field, worded with the field's label (`self.spec_errors`
        keeps the spec paths); errors no field shows keep their path, above the form."""
        for path, messages in errors.items():
            self.spec_errors.setdefault(path, []).extend(messages)
            field = field_for_path(path)
            if field is not None and field in self.errors and self.wire_override is None:
                continue  # the field already says it cannot be read (e.g. not a number)
            for message in messages:
                self.add_error(field, self.error_text(path, message))

    def error_text(self, path: str, message: str) -> str:
        """`execution_policy_config.window` + `is required` → `Weekly window is required.`"""
        field = field_for_path(path)
        if field is None:
            return f"{path}: {message}"
        label = str(self.fields[field].label or field.replace("_", " ").capitalize())
        item = _INDEX.search(path)
        if item:
            label += f", item {int(item.group()[1:-1]) + 1}"
        if message.split(" ", 1)[0] in ("is", "must", "cannot", "should", "may", "has", "needs", "does"):
            return f"{label} {message}."
        return f"{label}: {message}"

    def shown_sections(self) -> dict[str, bool]:
        """Which parts of the form apply to the chosen backend and policy."""
        backend = self.value_of("backend") or specs.BUILTIN_BACKENDS[1]
        kind = self.value_of("execution_policy") or "fixed"
        source = self.value_of("worker_source") or "cloud"
        # A field that does not apply is still shown when it carries an error, so the error is seen.
        errors = self.errors if self.is_bound else {}
        return {
            "command": backend not in specs.BUILTIN_BACKENDS or backend in specs.COMMAND_BACKENDS or "command" in errors,
            "vllm_version": backend in specs.VLLM_BACKENDS or "vllm_version" in errors,
            "replicas": kind in ("fixed", "scheduled"),
            "scheduled": kind == "scheduled",
            "cron": kind == "scheduled" and self.value_of("schedule_kind") == "cron",
            "window": kind == "scheduled" and self.value_of("schedule_kind") != "cron",
            "autoscaling": kind == "autoscaling",
            "cloud": kind == "autoscaling" and source != "private",
            "private": kind == "autoscaling" and source == "private",
        }


# --- previews -----------------------------------------------------------------------------


def loose_values(form: WorkloadForm) -> dict:
    """Field values (bound or initial) for a preview; unreadable fields count as empty."""
    values = {}
    for name, field in form.fields.items():
        try:
            values[name] = field.clean(form[name].value())
        except ValidationError:
            values[name] = None
    return values


def _when(moment: datetime) -> str:
    # Formatted here, not with the template's `date` filter, which would convert to the server's zone.
    return moment.strftime("%a %Y-%m-%d %H:%M")


def schedule_preview(form: WorkloadForm, viewer_zone: str | None, now: datetime, count: int = 5) -> dict:
    """The next `count` transitions of the form's schedule in the schedule's own zone, and also in
    the viewer's zone (`viewer_zone`, from the browser) when that differs."""
    values = loose_values(form)
    try:
        policy = policies.parse("scheduled", policy_config_from_fields("scheduled", values))
    except policies.PolicyErrors as exc:
        return {"error": "; ".join(form.error_text(p, m) for p, ms in exc.errors.items() for m in ms),
                "transitions": []}
    zone = policy["window"]["tz"] if "window" in policy else policy.get("tz", "UTC")
    own = ZoneInfo(zone)
    viewer = ZoneInfo(viewer_zone) if viewer_zone and viewer_zone != zone else None
    transitions = [
        {"at": _when(when.astimezone(own)), "active": active,
         "viewer_at": _when(when.astimezone(viewer)) if viewer else ""}
        for when, active in next_transitions(policy, now, count)
    ]
    return {"error": "", "zone": zone, "viewer_zone": str(viewer) if viewer else "", "transitions": transitions}


next_transitions = policies.next_transitions
