"""An Airflow task that downloads the drawings of a patent list with patent-images, called as a library.

    from airflow.decorators import dag
    from airflow_task import download_patent_drawings

    @dag(schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False)
    def patents():
        download_patent_drawings(["/data/patents.csv"], "/data/patent-images")

Each run works on the same output: patents settled before are never asked again, so a daily run
pays only for the new ones. The task returns the run's counts and cost (pushed to XCom as its
return value). A fatal stop (credentials refused, quota or balance spent, the API or CDN out of
reach: exit 3) fails the task without retries, because a person must act; an interrupt (130) fails
it with retries, and a budget or time cap (exit 4) succeeds with what was done: the next run
continues. Credentials come from the worker's environment (PATSNAP_CLIENT_ID and
PATSNAP_CLIENT_SECRET, or PATSNAP_TOKEN and PATSNAP_API_KEY; PATSNAP_API_BASE to point elsewhere).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.decorators import task
from airflow.exceptions import AirflowException, AirflowFailException

from downloader import Settings, Summary, run_job

_CREDENTIALS = {"api_base": "PATSNAP_API_BASE", "client_id": "PATSNAP_CLIENT_ID",
                "client_secret": "PATSNAP_CLIENT_SECRET", "token": "PATSNAP_TOKEN", "api_key": "PATSNAP_API_KEY"}


def settings_from_env() -> Settings:
    """The job's settings: PatSnap's credentials from the environment, every other setting its default."""
    given = {field: os.environ[name] for field, name in _CREDENTIALS.items() if os.environ.get(name)}
    return Settings(**given)


def run_counts(summary: Summary) -> dict[str, int | float | str]:
    """The run's counts by outcome, API calls, cost and manifest location (plain values, for XCom)."""
    by = summary.by_status
    return {"exit_code": summary.exit_code, "stopped": summary.stop_reason.value if summary.stop_reason else "",
            "downloaded": by.get("downloaded", 0), "no_image": by.get("no_image", 0),
            "not_found": by.get("not_found", 0), "failed": by.get("failed", 0),
            "left_for_next_run": by.get("pending", 0) + by.get("resolved", 0), "api_calls": summary.api_calls,
            "charged_results": summary.charged, "recharged_results": summary.recharged, "images": summary.images,
            "megabytes": round(summary.bytes / 1e6, 1), "seconds": summary.seconds, "manifest": summary.manifest}


@task(retries=2, retry_delay=timedelta(minutes=30))
def download_patent_drawings(inputs: list[str], out: str) -> dict[str, int | float | str]:
    """Run the job on `inputs` into `out` (a folder or s3://bucket/prefix); return its counts and cost."""
    summary = run_job(inputs, out, settings_from_env())
    if summary.exit_code == 3:
        hint = getattr(summary.error, "hint", "")
        raise AirflowFailException(f"patent-images stopped: {summary.fatal}. {hint}")
    if summary.exit_code == 130:
        raise AirflowException("patent-images was interrupted; state is kept, a retry continues")
    return run_counts(summary)
