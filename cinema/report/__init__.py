"""`cinema report`: the marts as one self-contained HTML page.

Everything is drawn here: each chart is SVG built from the marts, the stylesheet
is inlined, and the page refers to nothing outside itself (no scripts, fonts or
images to fetch), so it opens offline, as a CI artefact or an e-mail attachment
alike. Every text that comes from the data goes through `escape()`: film titles
carry quotes, apostrophes, ampersands and accents.

With a ClickHouse server the report reads as Metabase's user, which can read the
marts and nothing else; the embedded warehouse has no users.
"""
