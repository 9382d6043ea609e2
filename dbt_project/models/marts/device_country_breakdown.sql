-- Sessions, viewers, watch time and completion per device type and viewer country,
-- with the analytics-owned groupings from the seeds. A code the seeds do not list
-- (a new device type, a country such as 'ZZ') keeps its code and gets the seed's
-- explicit `unknown` member, so it is visible rather than failing a test.

with

sessions as (

    select * from {{ ref('viewing_sessions') }}
    where not is_orphan

),

devices as (

    select * from {{ ref('device_categories') }}

),

countries as (

    select * from {{ ref('country_regions') }}

),

by_device_and_country as (

    select
        device_type,
        country_code,
        count() as sessions,
        uniqExact(user_id) as viewers,
        sum(watched_seconds) / 3600 as watch_hours,
        avg(is_completed) as completion_rate,
        if(device_type in (select devices.device_type from devices), device_type, 'unknown') as device_key,
        if(country_code in (select countries.country_code from countries), country_code, 'unknown') as country_key

    from sessions
    group by device_type, country_code

),

final as (

    select
        by_device_and_country.device_type as device_type,
        devices.device_category as device_category,
        by_device_and_country.country_code as country_code,
        countries.country_name as country_name,
        countries.region as region,
        by_device_and_country.sessions as sessions,
        by_device_and_country.viewers as viewers,
        by_device_and_country.watch_hours as watch_hours,
        by_device_and_country.completion_rate as completion_rate

    from by_device_and_country
    left join devices on by_device_and_country.device_key = devices.device_type
    left join countries on by_device_and_country.country_key = countries.country_code

)

select *, {{ marts_as_of() }} as as_of from final
