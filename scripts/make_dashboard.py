"""Write deploy/grafana/dashboards/knapsack-rl.json (the Grafana dashboard of allocation state).
Generated so that panel ids, grid positions and the datasource stay consistent; edit here and run
`python scripts/make_dashboard.py` (a test checks the JSON is up to date with this script)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
OUT = Path(__file__).resolve().parent.parent / "deploy/grafana/dashboards/knapsack-rl.json"


def target(expr: str, legend: str = "", fmt: str = "time_series", ref: str = "A") -> dict:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "format": fmt, "refId": ref}


def timeseries(
    title: str, targets: list[dict], unit: str = "short", desc: str = "", maxv: float | None = None
) -> dict:
    defaults: dict = {"unit": unit, "custom": {"lineWidth": 2, "fillOpacity": 10}}
    if maxv is not None:
        defaults.update(min=0, max=maxv)
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
    }


def heatmap(title: str, expr: str, desc: str) -> dict:
    return {
        "type": "heatmap",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": [target(expr, "{{le}}", "heatmap")],
        "options": {
            "calculate": False,
            "yAxis": {"unit": "short"},
            "color": {"scheme": "Oranges", "mode": "scheme"},
            "cellGap": 1,
            "tooltip": {"show": True, "yHistogram": True},
        },
        "fieldConfig": {"defaults": {}, "overrides": []},
    }


def stat(title: str, expr: str, unit: str = "short") -> dict:
    return {
        "type": "stat",
        "title": title,
        "datasource": DS,
        "targets": [target(expr)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
    }


RATE = "$__rate_interval"
PANELS = [
    # (panel, width, height)
    (stat("Allocators up", 'sum(up{job=~".*allocator.*"})'), 4, 4),
    (stat("Allocations / s", f"sum(rate(krl_allocator_allocations_total[{RATE}]))", "ops"), 5, 4),
    (stat("Prompts tracked", "krl_allocator_prompts_tracked"), 5, 4),
    (stat("Trainer step", "max(krl_trainer_step)"), 5, 4),
    (
        stat("Effective-rollout ratio", "avg(krl_trainer_effective_rollout_ratio)", "percentunit"),
        5,
        4,
    ),
    (
        timeseries(
            "Effective-rollout ratio",
            [
                target(
                    "avg(krl_trainer_effective_rollout_ratio)", "rollouts with a gradient", ref="A"
                ),
                target(
                    "avg(krl_trainer_effective_prompt_ratio)", "prompts with a gradient", ref="B"
                ),
                target("avg(krl_trainer_all_wrong_ratio)", "all wrong", ref="C"),
                target("avg(krl_trainer_all_correct_ratio)", "all correct", ref="D"),
            ],
            "percentunit",
            "Share of rollouts (and prompts) in groups with reward variance, i.e. that "
            "carry a GRPO gradient; the rest were all correct or all wrong.",
            1,
        ),
        12,
        8,
    ),
    (
        heatmap(
            "Rollouts per prompt (n)",
            f"sum by (le) (increase(krl_allocator_rollouts_per_prompt_bucket[{RATE}]))",
            "How many rollouts the allocator gives each prompt, over time.",
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Allocate and solve latency",
            [
                target(
                    "histogram_quantile(0.99, sum by (le) (rate("
                    f"krl_allocator_allocate_duration_seconds_bucket[{RATE}])))",
                    "Allocate p99",
                    ref="A",
                ),
                target(
                    "histogram_quantile(0.5, sum by (le) (rate("
                    f"krl_allocator_allocate_duration_seconds_bucket[{RATE}])))",
                    "Allocate p50",
                    ref="B",
                ),
                target(
                    "histogram_quantile(0.99, sum by (le, mode) (rate("
                    f"krl_allocator_solve_duration_seconds_bucket[{RATE}])))",
                    "solve p99 {{mode}}",
                    ref="C",
                ),
            ],
            "s",
            "Allocate covers Redis reads and writes; solve is the knapsack alone.",
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Prompts solved / unsolved",
            [
                target("krl_allocator_prompts_solved", "solved (last visit all correct)", ref="A"),
                target(
                    "krl_allocator_prompts_unsolved", "unsolved (last visit all wrong)", ref="B"
                ),
                target("krl_allocator_prompts_tracked", "tracked", ref="C"),
            ],
            "short",
            "Prompts by the outcome of their last visit, over all namespaces.",
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Mean and largest n",
            [
                target(
                    f"sum(rate(krl_allocator_rollouts_per_prompt_sum[{RATE}])) / "
                    f"sum(rate(krl_allocator_rollouts_per_prompt_count[{RATE}]))",
                    "mean n",
                    ref="A",
                ),
                target("max(krl_trainer_max_n)", "largest n (trainer's last step)", ref="B"),
            ],
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Outcome reports",
            [
                target(
                    f"sum by (result) (rate(krl_allocator_report_outcomes_total[{RATE}]))",
                    "{{result}}",
                ),
            ],
            "ops",
            "Per-prompt outcomes reported back: accepted, duplicate (a retried report, not "
            "counted again) and rejected.",
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Held-out accuracy",
            [
                target("krl_trainer_heldout_accuracy_ratio", "{{level}}"),
            ],
            "percentunit",
            "Greedy held-out accuracy by level (trainer evaluations).",
            1,
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Zero-variance groups",
            [
                target(
                    f"sum by (kind) (rate(krl_allocator_zero_variance_groups_total[{RATE}]))",
                    "{{kind}}",
                ),
            ],
            "ops",
        ),
        12,
        8,
    ),
]


def dashboard() -> dict:
    panels, x, y, row_h = [], 0, 0, 0
    for i, (panel, w, h) in enumerate(PANELS, start=1):
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
        panels.append({**panel, "id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
        x += w
        row_h = max(row_h, h)
    return {
        "uid": "knapsack-rl",
        "title": "knapsack-rl: allocation state",
        "tags": ["knapsack-rl"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                    "current": {},
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=1) + "\n"


if __name__ == "__main__":
    if "--print" in sys.argv[1:]:
        sys.stdout.write(render())
    else:
        OUT.write_text(render())
        print(OUT, file=sys.stderr)
