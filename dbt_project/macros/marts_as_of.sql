{% macro marts_as_of() %}
    {#-
        The "as of" time of a mart build: when the publisher received the newest event
        in the raw table the build read. Every mart selects it as its last column, so a
        dashboard can say how current its numbers are (`cinema live` refreshes them).
        A scalar subquery is Nullable in ClickHouse; the contracts say it is not (1970
        stands for an empty raw table).
    -#}
    ifNull((select max(received_at) from {{ source('cinema', 'viewing_events') }}), toDateTime64(0, 6, 'UTC'))
{% endmacro %}
