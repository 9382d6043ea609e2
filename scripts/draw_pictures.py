"""`make pictures`: the pictures in pictures/, drawn from their sources.

- network.dot / .png: docker-compose.yaml's services and networks, read from the file:
  each network with its subnet, each service with its image, command and published
  ports, joined to the networks it is on. Networks run top to bottom in the order that
  keeps those joins shortest, each service between the networks it joins.
- architecture.dot / .png: how data flows from the producer to the marts and their readers.
- report.png (with --report): a screenshot of a report rendered from real data.

The .dot files are committed beside the PNGs, and tests/unit/test_pictures.py
regenerates them from the current compose file, so a picture cannot drift from
what it shows. Rendering needs Graphviz (`dot`) and, for the screenshot, Chromium.
"""

from __future__ import annotations

import html
import itertools
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from cinema.paths import PROJECT_ROOT
from scripts import chromium

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
PICTURES = PROJECT_ROOT / "pictures"
FONT = "Inter"
INK, MUTED, LINE, EDGE = "#151a2d", "#646b80", "#cfd3e1", "#8a90a3"
PORT_COLOUR = "#b45309"
# One colour per network, in the compose file's order.
NETWORK_COLOURS = ("#2563eb", "#7c3aed", "#d97706", "#059669", "#0891b2", "#db2777", "#65a30d", "#dc2626")
REPORT_WIDTH = 1280
# ${NAME:-default} or ${NAME-default}: what Compose uses when .env does not set NAME.
DEFAULTED_VARIABLE = re.compile(r"\$\{\w+:?-([^}]*)\}")
# A command longer than this is shown one argument a line.
COMMAND_LINE_LIMIT = 32

Line = tuple[str, str]  # text, colour


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return compose


# --- Graphviz text ----------------------------------------------------------------


def _attributes(**attributes: str | float) -> str:
    """name="value", ...; an HTML-like label (<...>) and numbers go unquoted."""
    return ", ".join(
        f'{name}="{value}"' if isinstance(value, str) and not value.startswith("<") else f"{name}={value}"
        for name, value in attributes.items()
    )


def _label(title: str, *lines: Line, size: int = 9) -> str:
    """An HTML-like label: a bold title over smaller lines."""
    rows = [f'<tr><td align="left"><b>{html.escape(title)}</b></td></tr>']
    rows += [
        f'<tr><td align="left"><font point-size="{size}" color="{colour}">{html.escape(text)}</font></td></tr>'
        for text, colour in lines
    ]
    return f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">{"".join(rows)}</table>>'


def _header(name: str, comment: str, title: str, subtitle: str, **graph: str | float) -> list[str]:
    """The opening of a digraph with the pictures' shared look; `graph` adds or overrides graph attributes."""
    graph_attributes = _attributes(
        **{
            "fontname": FONT,
            "fontsize": 20,
            "fontcolor": INK,
            "labelloc": "t",
            "labeljust": "l",
            "label": _label(title, (subtitle, MUTED), size=12),
            "bgcolor": "white",
            "pad": "0.4",
            **graph,
        }
    )
    node_attributes = _attributes(
        shape="box",
        style="rounded,filled",
        fontname=FONT,
        fontsize=12,
        fontcolor=INK,
        color=LINE,
        fillcolor="white",
        penwidth=1.2,
        margin="0.16,0.08",
    )
    return [
        f"// {comment} `make pictures` redraws it.",
        f"digraph {name} {{",
        f"  graph [{graph_attributes}];",
        f"  node [{node_attributes}];",
    ]


# --- network.dot --------------------------------------------------------------------


def _service_networks(service: dict[str, Any]) -> list[str]:
    # A list of names, or a mapping of names to per-network options.
    return list(service.get("networks", ["default"]))


def _published_ports(service: dict[str, Any]) -> list[str]:
    published = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            host = f"{port['host_ip']}:" if port.get("host_ip") else ""
            published.append(f"{host}{port.get('published', '')} → {port['target']}")
        else:
            *outside, container = DEFAULTED_VARIABLE.sub(r"\1", str(port)).rsplit(":", 1)
            published.append(f"{outside[0]} → {container}" if outside else container)
    return published


def network_order(networks: Sequence[str], memberships: Iterable[Sequence[str]]) -> list[str]:
    """The networks in the order where services on several networks span the fewest; ties keep file order.

    Tries every order: fine for the handful of networks a Compose file has.
    """
    spanning = [members for members in memberships if len(members) > 1]

    def cost(order: Iterable[str]) -> tuple[int, list[int]]:
        position = {network: i for i, network in enumerate(order)}
        spans = sum(
            (max(position[n] for n in members) - min(position[n] for n in members)) ** 2 for members in spanning
        )
        return spans, [networks.index(network) for network in position]

    return list(min(itertools.permutations(networks), key=cost))


def _network_node(network: str, settings: dict[str, Any], colour: str) -> str:
    subnets = [pool["subnet"] for pool in (settings.get("ipam") or {}).get("config", []) if "subnet" in pool]
    details = [(subnet, INK) for subnet in subnets] or [("subnet chosen by Docker", MUTED)]
    if settings.get("internal"):
        details.append(("internal: no route outside", MUTED))
    attributes = _attributes(
        label=_label(network, *details, size=11),
        style="rounded,filled,bold",
        color=colour,
        fillcolor=colour + "1a",
        penwidth=2.4,
        fontsize=14,
        margin="0.22,0.14",
    )
    return f'  "{network}" [{attributes}];'


def _service_node(name: str, service: dict[str, Any]) -> str:
    build = service.get("build")
    if build is None:
        details = [(str(service.get("image", "")), MUTED)]
    else:
        dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        details = [(f"built from {dockerfile}", MUTED)]
    command = service.get("command")
    if command:
        arguments = command if isinstance(command, list) else [str(command)]
        joined = " ".join(arguments)
        details += [(line, MUTED) for line in ([joined] if len(joined) <= COMMAND_LINE_LIMIT else arguments)]
    details += [(f"published {port}", PORT_COLOUR) for port in _published_ports(service)]
    restart = str(service.get("restart", "no"))
    if restart == "no" or restart.startswith("on-failure"):
        details.append(("runs once, then exits", MUTED))
    style = "rounded,filled,dashed" if service.get("profiles") else "rounded,filled"
    return f'  "{name}" [{_attributes(label=_label(name, *details), style=style)}];'


def network_dot(compose: dict[str, Any]) -> str:
    """docker-compose.yaml's services and networks as a Graphviz graph."""
    services: dict[str, dict[str, Any]] = compose["services"]
    declared: dict[str, dict[str, Any] | None] = compose.get("networks", {})
    memberships = {name: _service_networks(service) for name, service in services.items()}
    networks = list(declared) + sorted({n for members in memberships.values() for n in members} - set(declared))
    colour = dict(zip(networks, itertools.cycle(NETWORK_COLOURS), strict=False))
    # Networks on odd ranks; a service on the rank between the first two networks it
    # joins, or, on one network only, just below it (above the first network).
    network_rank = {network: 2 * i + 1 for i, network in enumerate(network_order(networks, memberships.values()))}

    def service_rank(members: Sequence[str]) -> int:
        ranks = [network_rank[n] for n in members]
        if len(ranks) > 1:
            return min(ranks) + 1
        return ranks[0] - 1 if ranks[0] == 1 else ranks[0] + 1

    lines = _header(
        "network",
        "Generated by scripts/draw_pictures.py from docker-compose.yaml;",
        f"{compose.get('name', 'docker compose')}: services and networks",
        "From docker-compose.yaml. Dashed: only with --profile dev. Ports: host → container.",
        rankdir="TB",
        nodesep="0.3",
        ranksep="0.32",
        splines="spline",
    )
    lines.append(f"  edge [{_attributes(arrowhead='none', penwidth=2.2)}];")
    lines += ["", *(_network_node(n, declared.get(n) or {}, colour[n]) for n in network_rank)]
    lines += ["", *(_service_node(name, service) for name, service in services.items())]
    lines.append("")
    for name, members in memberships.items():
        rank = service_rank(members)
        for network in members:
            # From the upper rank to the lower, exactly as many ranks apart as placed.
            upper, lower = (name, network) if rank < network_rank[network] else (network, name)
            attributes = _attributes(color=colour[network], minlen=abs(network_rank[network] - rank))
            lines.append(f'  "{upper}" -> "{lower}" [{attributes}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- architecture.dot ---------------------------------------------------------------

# (system, colour, steps): a named system is a box whose steps stack top to bottom;
# an unnamed one is a step on its own. A step is (node, title, details).
ARCHITECTURE: tuple[tuple[str, str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "",
        EDGE,
        (("producer", "producer", "cinema generate: viewing events,\nwith duplicates, late and orphan events"),),
    ),
    (
        "PostgreSQL 18",
        "#336791",
        (
            ("publisher", "publisher", "movies · users · viewing_events"),
            ("subscriber", "subscriber", "the same tables, each row stamped\nwith its transaction id (_xid)"),
        ),
    ),
    ("", EDGE, (("loader", "loader", "cinema load: exactly once,\nin _xid order"),)),
    (
        "ClickHouse (embedded chdb or server)",
        "#b7791f",
        (
            ("raw", "cinema_raw", "viewing_events · users · movies"),
            ("staging", "dbt staging", "typed, deduplicated views"),
            ("intermediate", "dbt intermediate", "events → sessions (incremental)"),
            (
                "marts",
                "dbt marts: cinema_marts",
                "viewing_sessions · daily_viewing\nmovie_performance · movie_dropoff\n"
                "viewing_heatmap · device_country_breakdown",
            ),
        ),
    ),
    (
        "Readers",
        "#4f46e5",
        (
            ("metabase", "Metabase", "dashboard, read-only ClickHouse user"),
            ("report", "HTML report", "cinema report: one offline page"),
        ),
    ),
)
DATA_FLOW = (
    ("producer", "publisher", "INSERT"),
    ("publisher", "subscriber", "logical replication"),
    ("subscriber", "loader", "postgresql() pull"),
    ("loader", "raw", "append"),
    ("raw", "staging", ""),
    ("staging", "intermediate", ""),
    ("intermediate", "marts", "dbt build + tests"),
    ("marts", "metabase", ""),
    ("marts", "report", ""),
)
AIRFLOW = ("Airflow 3", "DAG cinema_elt, daily:\ngenerate → load → dbt → report")
AIRFLOW_RUNS = ("producer", "loader", "staging", "report")
AIRFLOW_COLOUR = "#017cee"


def _lines(text: str) -> list[Line]:
    return [(line, MUTED) for line in text.split("\n")]


def _step(node: str, title: str, details: str, colour: str, indent: str = "  ") -> str:
    return f'{indent}"{node}" [{_attributes(label=_label(title, *_lines(details)), color=colour, fontsize=13)}];'


def architecture_dot() -> str:
    """The data flow, producer to readers, with Airflow driving it."""
    lines = _header(
        "architecture",
        "Generated by scripts/draw_pictures.py;",
        "cinema-analytics: how the data flows",
        "Solid: data. Dashed: Airflow's DAG cinema_elt runs the step.",
        rankdir="LR",
        nodesep="0.35",
        ranksep="0.45",
        newrank="true",
    )
    lines.append(
        f"  edge [{_attributes(fontname=FONT, fontsize=10, fontcolor=MUTED, color=EDGE, penwidth=1.8, arrowsize=0.8)}];"
    )
    system_of = {}
    for index, (system, colour, steps) in enumerate(ARCHITECTURE):
        if not system:
            lines += [_step(*step, colour) for step in steps]
            continue
        cluster = _attributes(
            label=_label(system, size=11),
            fontsize=13,
            fontcolor=colour,
            color=colour,
            style="rounded,filled",
            fillcolor=colour + "0f",
            penwidth=1.4,
            margin="14",
        )
        # rank=same: left to right, the system is one column of its steps.
        lines += [f"  subgraph cluster_{index} {{", "    rank=same;", f"    graph [{cluster}];"]
        lines += [_step(*step, colour, indent="    ") for step in steps]
        lines.append("  }")
        system_of.update(dict.fromkeys((node for node, *_ in steps), index))
    lines.append(_step("airflow", *AIRFLOW, AIRFLOW_COLOUR))
    lines.append("")
    for source, target, label in DATA_FLOW:
        if source in system_of and system_of[source] == system_of.get(target):
            # Inside a column Graphviz draws an edge upwards; reversed, the flow reads
            # downwards, with its label beside the edge (xlabel) instead of across it.
            edge = f'"{target}" -> "{source}"'
            attributes = {"dir": "back", **({"xlabel": f"{label}  "} if label else {})}
        else:
            edge = f'"{source}" -> "{target}"'
            attributes = {"label": f" {label} "} if label else {}
        lines.append(f"  {edge}" + (f" [{_attributes(**attributes)}]" if attributes else "") + ";")
    orchestration = _attributes(style="dashed", color=AIRFLOW_COLOUR, penwidth=1.3, arrowhead="vee", constraint="false")
    lines += [f'  "airflow" -> "{step}" [{orchestration}];' for step in AIRFLOW_RUNS]
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- Rendering ----------------------------------------------------------------------


def render(dot_file: Path) -> Path:
    """dot_file -> the PNG beside it, through Graphviz."""
    dot = shutil.which("dot")
    if dot is None:
        raise click.ClickException("Graphviz is not installed (no `dot` on PATH): `apt-get install graphviz`")
    png = dot_file.with_suffix(".png")
    subprocess.run([dot, "-Tpng", "-Gdpi=110", "-o", str(png), str(dot_file)], check=True)
    return png


def sources() -> dict[str, str]:
    """Each picture's Graphviz source, by file name."""
    return {"network.dot": network_dot(load_compose()), "architecture.dot": architecture_dot()}


@click.command()
@click.option(
    "--report",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A page written by `cinema report`, to screenshot into pictures/report.png.",
)
def main(report: Path | None) -> None:
    """Write pictures/*.dot from their sources and render them (and the report) as PNG."""
    for name, text in sources().items():
        dot_file = PICTURES / name
        dot_file.write_text(text, encoding="utf-8")
        click.echo(f"{dot_file.relative_to(PROJECT_ROOT)} -> {render(dot_file).relative_to(PROJECT_ROOT)}")
    if report is not None:
        png = PICTURES / "report.png"
        try:
            chromium.screenshot(report, png, width=REPORT_WIDTH)
        except chromium.ChromiumMissing as error:
            raise click.ClickException(str(error)) from error
        click.echo(f"{report} -> {png.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
