import Foundation
import Jobs
import ResultsStore

/// A `circuit` run read back for the report.
struct CircuitData {
    var label: RunLabel
    let report: CircuitRunReport

    init(db: ResultsDatabase, run: RunRecord) throws {
        report = try CircuitRunReport(db: db, runID: run.id!)
        label = RunLabel(run)
        label.task = report.task
    }

    /// The circuit drawn as a graph: of the first method, the largest circuit of at most
    /// `maxEdges` edges (else the smallest non-empty one).
    func drawnCircuit(maxEdges: Int = 40) -> FaithfulnessRow? {
        guard let (method, selection) = report.series.first else { return nil }
        let curve = report.curves.filter { $0.method == method && $0.selection == selection && $0.edges > 0 }
        return curve.filter { $0.edges <= maxEdges }.max { $0.edges < $1.edges } ?? curve.min { $0.edges < $1.edges }
    }
}

/// Figures of `circuit` runs: the faithfulness curves, and one circuit as a layered graph.
enum CircuitFigures {
    /// Every run's curves on one axis: x the edges kept (log scale, 0 at the left end), y the
    /// normalised faithfulness; one line per run × method × selection.
    static func curves(_ runs: [CircuitData]) -> SVG {
        let ids = runs.map { "\($0.label.id)" }.joined(separator: ", ")
        let sets = Array(Set(runs.map(\.label.promptSet))).sorted().joined(separator: ", ")
        let heading = Heading(title: "Faithfulness against edges kept",
                              lines: ["\(sets) · circuit run\(runs.count > 1 ? "s" : "") \(ids) · (mean m − mean m_corrupt) / (mean m_clean − mean m_corrupt)"])
        let points = runs.flatMap(\.report.curves).filter { $0.normalized?.isFinite == true }
        let maxEdges = Double(points.map(\.edges).max() ?? 1)
        let ys = points.map { $0.normalized! } + [0, 1]
        let plotTop = heading.height + 6, plotH = 260.0, plotW = 560.0
        let yScale = LinearScale.nice(ys.min()!, ys.max()!, range: (plotTop + plotH, plotTop))
        let left = Axes.leftWidth(yScale) + 10
        // log10(1 + edges), so that the empty circuit sits at the left end.
        let xScale = LinearScale(domain: (0, log10(1 + max(1, maxEdges))), range: (left, left + plotW))
        func x(_ edges: Int) -> Double { xScale(log10(1 + Double(edges))) }
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        Axes.left(&svg, yScale, x: left, gridTo: left + plotW, label: "faithfulness")
        logAxis(&svg, maxEdges: maxEdges, y: plotTop + plotH, x: x, top: plotTop)
        for v in [0.0, 1.0] { svg.line(x1: left, y1: yScale(v), x2: left + plotW, y2: yScale(v), stroke: SVG.axis, dash: "4 3") }
        var entries: [(color: String, label: String)] = []
        for run in runs {
            for (method, selection) in run.report.series {
                let color = ColorMap.category(entries.count)
                let curve = run.report.curves.filter { $0.method == method && $0.selection == selection && $0.normalized?.isFinite == true }
                svg.polyline(curve.map { (x($0.edges), yScale($0.normalized!)) }, stroke: color, width: 1.8, title: run.label.short)
                for c in curve {
                    svg.circle(cx: x(c.edges), cy: yScale(c.normalized!), r: 2.5, fill: color,
                               title: "\(run.label.short) · \(method) \(selection) \(CircuitSpec.text(c.requested)): \(c.edges) edges, faithfulness \(Markup.fixed(c.normalized!, 4))")
                }
                entries.append((color, "\(run.label.model) (\(run.label.lnMode)) · \(method) · \(selection) · run \(run.label.id)"))
            }
        }
        let legendY = plotTop + plotH + 54
        let legendH = Legend.swatches(&svg, entries, x: left, y: legendY, marker: .line)
        svg.width = max(heading.width, left + plotW + 16, left + Legend.swatchesWidth(entries.map(\.label), marker: .line) + 8)
        svg.height = legendY + legendH
        return svg
    }

    /// Ticks at 0, 1, 10, 100, … up to `maxEdges`, and the axis label.
    static func logAxis(_ svg: inout SVG, maxEdges: Double, y: Double, x: (Int) -> Double, top: Double) {
        var ticks = [0], t = 1
        while Double(t) <= maxEdges { ticks.append(t); t *= 10 }
        for v in ticks {
            svg.line(x1: x(v), y1: top, x2: x(v), y2: y, stroke: SVG.grid)
            svg.line(x1: x(v), y1: y, x2: x(v), y2: y + 4, stroke: SVG.axis)
            svg.text("\(v)", x: x(v), y: y + 16, anchor: .middle, size: SVG.smallSize)
        }
        svg.line(x1: x(0), y1: y, x2: x(Int(maxEdges)), y2: y, stroke: SVG.axis)
        svg.text("edges kept (log scale)", x: (x(0) + x(Int(maxEdges))) / 2, y: y + 34, anchor: .middle)
    }

    /// One circuit as a graph: input at the bottom, per layer a row of heads and above it the
    /// MLP, the logits at the top; each edge a line from its upstream node to its downstream node
    /// (q, k and v inputs enter the head's left, middle and right), width by |score|, colour by
    /// sign (blue positive, red negative).
    static func graph(_ run: CircuitData, _ point: FaithfulnessRow) -> SVG {
        let edges = run.report.edges.filter { $0.method == point.method && $0.selection == point.selection && $0.requested == point.requested }
        let (layers, heads) = shape(run.report.edges)
        let heading = Heading(title: "Circuit: \(point.method) \(point.selection) \(CircuitSpec.text(point.requested)) (\(point.edges) edges)",
                              lines: [run.label.provenance, "faithfulness \(point.normalized.map { Markup.fixed($0, 4) } ?? "–") · width ∝ |mean score| · blue > 0, red < 0"])
        let rowH = 58.0, nodeW = 44.0, gap = 14.0, left = 20.0
        let width = max(heading.width, left * 2 + Double(heads) * (nodeW + gap) + 40)
        let rows = 2 * layers + 2
        let top = heading.height + 8, bottom = top + Double(rows - 1) * rowH
        func center(_ name: String) -> (x: Double, y: Double)? {
            if name == "input" { return (width / 2, bottom) }
            if name == "logits" { return (width / 2, top) }
            if name.hasPrefix("m"), let l = Int(name.dropFirst()) { return (width / 2, bottom - Double(2 * l + 2) * rowH) }
            let parts = name.dropFirst().split(separator: ".h")
            guard parts.count == 2, let l = Int(parts[0]), let h = Int(parts[1]) else { return nil }
            let rowW = Double(heads) * (nodeW + gap) - gap
            return ((width - rowW) / 2 + Double(h) * (nodeW + gap) + nodeW / 2, bottom - Double(2 * l + 1) * rowH)
        }
        var svg = SVG(width: width, height: bottom + 30)
        heading.draw(&svg)
        let maxScore = edges.map { abs($0.score) }.max() ?? 1
        let used = Set(edges.flatMap { [$0.upstream, $0.downstream] })
        for e in edges.sorted(by: { abs($0.score) < abs($1.score) }) {
            guard let a = center(e.upstream), let b = center(e.downstream) else { continue }
            let dx = e.input == "q" ? -nodeW / 3 : e.input == "v" ? nodeW / 3 : 0
            svg.line(x1: a.x, y1: a.y - 9, x2: b.x + dx, y2: b.y + 9, stroke: e.score >= 0 ? "#2166ac" : "#b2182b",
                     width: 0.6 + 4 * abs(e.score) / (maxScore > 0 ? maxScore : 1), opacity: 0.75,
                     title: "\(e.edge): mean score \(Markup.fixed(e.score, 5))")
        }
        var names = ["input", "logits"]
        for l in 0..<layers { names += (0..<heads).map { "a\(l).h\($0)" } + ["m\(l)"] }
        for name in names {
            guard let c = center(name) else { continue }
            let on = used.contains(name), w = name.hasPrefix("a") ? nodeW : 56
            svg.rect(x: c.x - w / 2, y: c.y - 9, width: w, height: 18, fill: on ? "#ffffff" : "#f4f4f4", stroke: on ? SVG.ink : SVG.grid,
                     strokeWidth: on ? 1 : 0.5, title: name)
            svg.text(name, x: c.x, y: c.y, anchor: .middle, size: SVG.smallSize, fill: on ? SVG.ink : SVG.muted, middle: true)
        }
        return svg
    }

    /// Layers and heads of the graph the run's edges name (`a{l}.h{h}`, `m{l}`).
    static func shape(_ edges: [CircuitEdgeRow]) -> (layers: Int, heads: Int) {
        var layers = 0, heads = 0
        for name in Set(edges.flatMap { [$0.upstream, $0.downstream] }) {
            if name.hasPrefix("m"), let l = Int(name.dropFirst()) { layers = max(layers, l + 1) }
            let parts = name.dropFirst().split(separator: ".h")
            if name.hasPrefix("a"), parts.count == 2, let l = Int(parts[0]), let h = Int(parts[1]) {
                layers = max(layers, l + 1)
                heads = max(heads, h + 1)
            }
        }
        return (layers, max(heads, 1))
    }
}
