{% macro marts_as_of() %}
    {#
        The "as of" time of a mart build: when the publisher received the newest event
        the build read (ClickHouse prunes the staging view's window functions for this
        query, so it costs a column's min/max). Every mart selects it as its last
        column, so a dashboard can say how current its numbers are (`cinema live`
        refreshes them). A scalar subquery is Nullable in ClickHouse; the contracts
        say it is not (1970 stands for an empty raw table).
    #}
    ifNull((select max(received_at) from {{ ref('stg_cinema__viewing_events') }}), toDateTime64(0, 6, 'UTC'))
{% endmacro %}
