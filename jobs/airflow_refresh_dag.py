"""An Airflow DAG that refreshes a published corpusmill snapshot every day (example).

Copy this file into Airflow's ``dags/`` folder (Airflow 2.x or 3.x) and set three Airflow
Variables (or edit the defaults below):

* ``corpusmill_snapshots``: the folder of dated snapshots, e.g. ``/data/snapshots``,
  holding ``latest`` (a link to the newest complete snapshot, made by ``corpusmill run``
  or by this DAG);
* ``corpusmill_input``: the glob of the new crawl (default ``/data/crawl/<ds>/**/*.jsonl.zst``,
  ``<ds>`` the run's date);
* ``corpusmill_job``: the job spec (YAML) used for the first snapshot; a refresh
  must use the same dedup settings, and is refused before anything runs otherwise.

One run: ``corpusmill refresh --previous SNAPSHOTS/latest --input GLOB --output
SNAPSHOTS/{{ ds }}``, then ``latest`` is moved to the new snapshot by one rename.
The CLI's exit status drives the task: 0 published, 3 published with nothing new
(still a complete snapshot: ``latest`` moves on so the lineage stays one chain), 2 a
bad configuration or an output another run holds (corpusmill's own lock; Airflow
retries later), 1 failed. A retried or re-triggered run writes the same output with
``--overwrite``: corpusmill replaces only its own snapshot, and only once the new one
is complete, and a killed run's stale lock is taken over.

The DAG imports nothing from corpusmill: workers run the ``corpusmill`` CLI of the
environment they have (a virtualenv, a container image).
"""

from __future__ import annotations

import datetime as dt

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator

# Read when the task runs (Jinja), not when the scheduler parses this file.
SNAPSHOTS = "{{ var.value.get('corpusmill_snapshots', '/data/snapshots') }}"
INPUT = "{{ var.value.get('corpusmill_input', '/data/crawl/' ~ ds ~ '/**/*.jsonl.zst') }}"
JOB = "{{ var.value.get('corpusmill_job', '/data/jobs/corpus.yaml') }}"

REFRESH = f"""
set -u
status=0
corpusmill refresh "{JOB}" --previous "{SNAPSHOTS}/latest" --input "{INPUT}" \\
    --output "{SNAPSHOTS}/{{{{ ds }}}}" --overwrite || status=$?
case $status in
  0|3) ;;   # published (3: nothing new, still a complete snapshot)
  *) exit $status ;;
esac
# Move `latest` by one rename: readers see the old snapshot or the new one.
ln -sfn "{{{{ ds }}}}" "{SNAPSHOTS}/.latest-{{{{ ds }}}}" && mv -Tf "{SNAPSHOTS}/.latest-{{{{ ds }}}}" "{SNAPSHOTS}/latest"
"""

with DAG(
    dag_id="corpusmill_refresh",
    description="Refresh the published pretraining corpus with the day's crawl",
    schedule="@daily",
    start_date=dt.datetime(2026, 12, 1),
    catchup=False,
    # One refresh at a time: each extends the snapshot the previous one published.
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": dt.timedelta(minutes=15)},
    tags=["corpusmill"],
) as dag:
    BashOperator(task_id="refresh", bash_command=REFRESH)
