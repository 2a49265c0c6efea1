import Analysis
import Foundation
import ResultsStore

/// Figures of `patch` runs: layer × position maps of activation patching beside each estimator,
/// and each estimator against activation patching.
enum PatchFigures {
    static func quantityName(_ q: String) -> String {
        switch q {
        case StoreName.activation: "activation patching"
        case StoreName.atp: "AtP"
        case StoreName.atpStar: "AtP*"
        default: q
        }
    }

    /// One row per site: activation patching, then each estimator stored for that site, on one
    /// diverging scale per row (centred at 0) so that the panels of a row compare.
    static func maps(_ run: PatchData) -> SVG {
        let columns: String
        if run.tokenLabels != nil {
            columns = "columns: token_i of the prompts' shared template"
        } else if run.sharedLength {
            columns = "columns: positions (no tokens stored)"
        } else {
            columns = "columns: positions — the prompts differ in length, so each cell is the mean over the prompts that reach it"
        }
        let heading = Heading(
            title: "Patching effect on the metric, layer × position, mean over \(run.label.storedPrompts ?? 0) prompts",
            lines: [run.label.provenance, columns, "blue: the patch raises the metric · red: lowers it · one colour scale per row"])
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        let cw = min(28, max(12, 360 / Double(max(1, run.positions))))
        let ch = min(24, max(12, 288 / Double(max(1, run.layers))))
        let labels = (0..<run.positions).map { p in
            let label = run.tokenLabels.map { $0[p] } ?? "pos \(p)"
            return label.count > 16 ? String(label.prefix(15)) + "…" : label
        }
        // Column labels hang down and to the left of their column at 55°.
        let longest = labels.map { SVG.textWidth($0, size: SVG.smallSize) }.max() ?? 0
        let labelDepth = longest * sin(55 * .pi / 180) + 18
        let left = 40.0, panelGap = 22.0
        let indent = max(0, longest * cos(55 * .pi / 180) + 4 - left - cw / 2)
        let gridW = cw * Double(run.positions), gridH = ch * Double(run.layers)
        var y = heading.height + 4
        var width = heading.width
        if run.sites.isEmpty {
            svg.text("no activation-patching rows at \(StoreName.positionSites.joined(separator: ", "))", x: 0, y: y + 14, fill: SVG.muted)
            y += 28
        }
        for site in run.sites {
            let quantities = [StoreName.activation] + run.estimators(site: site)
            let grids = quantities.map { run.grid(site: site, quantity: $0)! }
            let maxAbs = grids.flatMap { $0.flatMap { $0 } }.filter(\.isFinite).map(abs).max() ?? 0
            let scale = ColorScale.diverging(maxAbs: maxAbs)
            var x = indent
            let top = y + 18
            for (q, grid) in zip(quantities, grids) {
                svg.text("\(site) · \(quantityName(q))", x: x + left, y: y + 8, bold: true)
                for l in 0..<run.layers {
                    let cy = top + Double(l) * ch
                    svg.text("L\(l)", x: x + left - 5, y: cy + ch / 2, anchor: .end, size: SVG.smallSize, middle: true)
                    for p in 0..<run.positions {
                        let v = grid[l][p]
                        svg.rect(x: x + left + Double(p) * cw, y: cy, width: cw, height: ch, fill: scale.color(v), stroke: "#ffffff",
                                 strokeWidth: 0.5,
                                 title: "\(site) L\(l) \(labels[p]): \(quantityName(q)) \(Markup.number(v))")
                    }
                }
                for (p, label) in labels.enumerated() {
                    let lx = x + left + (Double(p) + 0.5) * cw, ly = top + gridH + 10
                    svg.text(label, x: lx, y: ly, anchor: .end, size: SVG.smallSize, rotate: -55)
                }
                svg.text("layer", x: x + 10, y: top + gridH / 2, anchor: .middle, size: SVG.smallSize, fill: SVG.muted, rotate: -90)
                x += left + gridW + panelGap
            }
            let legendWidth = Legend.colorBar(&svg, scale, x: x, y: top, height: max(gridH, 80), label: "effect")
            width = max(width, x + legendWidth + 8)
            y = top + max(gridH + labelDepth, 80) + 22
        }
        svg.width = width
        svg.height = y
        return svg
    }

    /// Each estimator against activation patching over (prompt, site, layer, position), coloured
    /// by site, with the diagonal.
    static func scatter(_ run: PatchData) -> SVG {
        let estimators = PatchData.quantities.dropFirst().filter { q in run.sites.contains { run.values[$0]?[q] != nil } }
        let perEstimator = estimators.map { points(run, estimator: $0) }
        let values = perEstimator.flatMap { $0.flatMap { [$0.x, $0.y] } }
        let range = (values.min() ?? 0, values.max() ?? 1)
        return Layout.sideBySide(zip(estimators, perEstimator).map { scatterPanel(run, estimator: $0, points: $1, range: range) })
    }

    /// (activation patching, estimate, site index) for every cell where both are stored.
    static func points(_ run: PatchData, estimator: String) -> [(x: Double, y: Double, site: Int)] {
        var points: [(x: Double, y: Double, site: Int)] = []
        for (s, site) in StoreName.positionSites.enumerated() {
            guard let exact = run.values[site]?[StoreName.activation], let estimate = run.values[site]?[estimator] else { continue }
            for cell in exact.keys.sorted(by: { ($0.prompt, $0.layer, $0.position) < ($1.prompt, $1.layer, $1.position) }) {
                if let e = estimate[cell], let x = exact[cell], e.isFinite, x.isFinite { points.append((x, e, s)) }
            }
        }
        return points
    }

    /// One estimator's scatter; `range`: the smallest and largest value to show on both axes
    /// (shared by the estimators' panels).
    static func scatterPanel(_ run: PatchData, estimator: String, points: [(x: Double, y: Double, site: Int)],
                             range: (Double, Double)) -> SVG {
        let shown = Sample.indices(count: points.count, limit: DLAFigures.maxPoints)
        let sampled = shown.count < points.count ? "\(Markup.count(shown.count)) of \(Markup.count(points.count)) points, seeded sample"
                                                 : "all \(Markup.count(points.count)) points"
        let heading = Heading(title: "\(quantityName(estimator)) against activation patching",
                              lines: [run.label.provenance, "per (prompt, site, layer, position) · \(sampled) · dashed: equal"])
        var plot = DiagonalScatter(heading: heading, range: range, xLabel: "activation patching effect",
                                   yLabel: "\(quantityName(estimator)) estimate")
        for i in shown {
            let p = points[i]
            plot.point(x: p.x, y: p.y, color: ColorMap.category(p.site))
        }
        let sites = StoreName.positionSites.enumerated().filter { run.values[$0.element]?[estimator] != nil }
            .map { (color: ColorMap.category($0.offset), label: $0.element) }
        return plot.finish(legend: sites, title: "site")
    }
}
