{% macro delete_sessions_that_no_longer_count() %}
    {#-
        The pre-hook of the incremental int_viewing_events_sessionized. A session whose
        deliveries are all excluded now (a film's runtime corrected, so every position
        is beyond it) has no row in this run's new data, and delete+insert deletes only
        the keys of the new data: without this its stale row would outlive the run,
        while a full refresh drops it. Deleting first keeps an interrupted run safe
        too: those sessions are gone either way.
        The keys are collected into a table first: a DELETE runs its subquery once
        per part it mutates, and this one reads the whole staging view. Nothing to
        delete, no mutation.
    -#}
{%- if execute and is_incremental() -%}
{%- set keys = this.incorporate(path={"identifier": this.identifier ~ "__no_longer_counted"}) -%}
{%- do run_query(
    "create or replace table " ~ keys ~ " engine = Memory as select session_id from " ~ this
    ~ " where session_id not in (select session_id from " ~ ref("stg_cinema__viewing_events")
    ~ " where exclusion_reason = '')"
) -%}
{%- if run_query("select count() from " ~ keys).columns[0].values()[0] > 0 -%}
{%- do run_query("delete from " ~ this ~ " where session_id in (select session_id from " ~ keys ~ ")") -%}
{%- endif -%}
{%- do run_query("drop table " ~ keys) -%}
{%- endif -%}
{% endmacro %}
