{% macro marts_as_of() %}
    {#
        The "as of" time of a mart build: when the publisher received the newest
        delivery that counts (exclusion_reason empty). Every mart selects it as its
        last column, so a dashboard can say how current its numbers are (`cinema live`
        refreshes them). Read from the sessions, which keep each session's newest
        receipt: a few thousand rows, not the staging view, and never an excluded
        delivery, whose received_at may lie in the future. A scalar subquery is
        Nullable in ClickHouse; the contracts say it is not: 1970-01-01 stands for
        "nothing counts yet" (no raw rows, or every one excluded).
    #}
    ifNull(
        (select max(last_received_at) from {{ ref('int_viewing_events_sessionized') }}),
        toDateTime64(0, 6, 'UTC')
    )
{% endmacro %}
