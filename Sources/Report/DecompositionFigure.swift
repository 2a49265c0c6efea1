import Analysis
import Foundation
import GPT2
import ResultsStore

/// `patch --decompose` drawn: AtP's NMAE against activation patching in each variant of the model
/// (the model, patterns frozen, GELU's tangent, LayerNorm scales frozen, all frozen), one panel per
/// site, one bar per run in each variant's group — an LN model beside its LN-free twin.
enum DecompositionFigure {
    static let variants = Freeze.decomposition.map(\.name)

    /// The run's stored NMAE (all layers, raw) of AtP in `variant` at `site`.
    static func nmae(_ run: PatchData, site: String, variant: String) -> Double? {
        let method = StoreName.frozen(StoreName.atp, variant: variant)
        return run.errors.first { $0.site == site && $0.method == method && $0.layer == nil && !$0.normalized && $0.metric == "nmae" }
            .flatMap { $0.value.isFinite ? $0.value : nil }
    }

    /// Whether a run holds a decomposition (an error row of a frozen variant).
    static func has(_ run: PatchData) -> Bool { run.errors.contains { StoreName.variant(of: $0.method).variant != "none" } }

    /// The chart of the runs that hold a decomposition; nil when none does.
    static func draw(_ runs: [PatchData]) -> SVG? {
        let drawn = runs.filter(has)
        guard !drawn.isEmpty else { return nil }
        let order = PatchSite.allCases.map(\.rawValue)
        let sites = Set(drawn.flatMap { $0.errors.map(\.site) }).sorted { (order.firstIndex(of: $0) ?? 99) < (order.firstIndex(of: $1) ?? 99) }
        let top = sites.flatMap { s in drawn.flatMap { r in variants.compactMap { nmae(r, site: s, variant: $0) } } }.max() ?? 1
        let heading = Heading(title: "Which nonlinearity breaks AtP: AtP's NMAE against activation patching, per variant",
                              lines: ["run\(drawn.count > 1 ? "s" : "") " + drawn.map { "\($0.label.id)" }.joined(separator: ", ")
                                      + " · \(Set(drawn.map(\.label.promptSet)).sorted().joined(separator: ", "))"
                                      + " · none: the model; attention: patterns frozen; mlp: GELU's tangent; ln: LayerNorm scales frozen;"
                                      + " all: all three (AtP = activation patching)"])
        let yScale = LinearScale.nice(0, max(top, 1e-9), range: (260, 20))
        var chart = Layout.sideBySide(sites.map { panel($0, drawn, yScale) })
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        svg.place(chart, x: 0, y: heading.height)
        let entries = drawn.enumerated().map { i, r in (color: ColorMap.category(i), label: r.label.provenance) }
        let legendY = heading.height + chart.height + 12
        let legendH: Double = Legend.swatches(&svg, entries, x: 10, y: legendY, marker: .dot)
        chart.width = max(chart.width, 10 + Legend.swatchesWidth(entries.map(\.label), marker: .dot))
        svg.width = max(heading.width, chart.width)
        svg.height = legendY + legendH
        return svg
    }

    /// One site: the variants on the x axis, a bar per run in each.
    static func panel(_ site: String, _ runs: [PatchData], _ yScale: LinearScale) -> SVG {
        let left = Axes.leftWidth(yScale) + 10, barW = 12.0, groupW = max(Double(runs.count) * barW + 14, 52)
        let bottom = yScale(0), plotW = groupW * Double(variants.count)
        var svg = SVG(width: left + plotW + 10, height: bottom + 40)
        svg.text(site, x: left, y: 10, size: SVG.fontSize, bold: true)
        Axes.left(&svg, yScale, x: left, gridTo: left + plotW, label: "AtP NMAE %")
        svg.line(x1: left, y1: bottom, x2: left + plotW, y2: bottom)
        for (g, variant) in variants.enumerated() {
            let x0 = left + Double(g) * groupW + 7
            for (i, run) in runs.enumerated() {
                guard let v = nmae(run, site: site, variant: variant) else { continue }
                let y = yScale(v)
                svg.rect(x: x0 + Double(i) * barW, y: y, width: barW - 2, height: max(0.5, bottom - y), fill: ColorMap.category(i),
                         title: "\(site), \(variant): AtP NMAE \(Show.percent(v)) — run \(run.label.id) \(run.label.model) (\(run.label.lnMode))")
            }
            svg.text(variant, x: x0 + Double(runs.count) * barW / 2, y: bottom + 14, anchor: .middle, size: SVG.smallSize)
        }
        return svg
    }
}
