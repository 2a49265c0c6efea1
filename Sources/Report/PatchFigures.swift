import Analysis
import Foundation
import ResultsStore

/// Figures of `patch` runs: layer × position maps per template and layer × head maps, activation
/// patching beside each estimator on colour scales shared by every run drawn, and each estimator
/// against what it estimates.
enum PatchFigures {
    static func quantityName(_ q: String) -> String {
        switch q {
        case StoreName.activation: "activation patching"
        case StoreName.atp: "AtP"
        case StoreName.atpStar: "AtP*"
        default: q
        }
    }

    /// One column of map panels: a quantity, signed (diverging scale) or as a magnitude
    /// (sequential scale: AtP* estimates |effect|, so it is drawn beside |activation patching|).
    struct Column {
        let quantity: String
        let absolute: Bool
        var title: String { absolute && quantity == StoreName.activation ? "|activation patching|" : quantityName(quantity) }
    }

    /// The columns of a site: activation patching and AtP (signed), then |activation patching|
    /// and AtP* (magnitudes) when any run has AtP* there.
    static func columns(_ runs: [PatchData], site: String) -> [Column] {
        let estimators = Set(runs.flatMap { $0.estimators(site: site) })
        var columns = [Column(quantity: StoreName.activation, absolute: false)]
        if estimators.contains(StoreName.atp) { columns.append(Column(quantity: StoreName.atp, absolute: false)) }
        if estimators.contains(StoreName.atpStar) {
            columns += [Column(quantity: StoreName.activation, absolute: true), Column(quantity: StoreName.atpStar, absolute: true)]
        }
        return columns
    }

    /// Whether the runs' maps are normalised: only when every run asks for the same
    /// `--grid-normalize` (one colour scale over normalised and raw values would compare nothing).
    static func normalization(_ runs: [PatchData]) -> PatchData.Normalization? {
        guard let first = runs.first?.normalization, runs.allSatisfy({ $0.normalization == first }) else { return nil }
        return first
    }

    /// The unit a map legend names: logit difference, or the quotient by the normalising effect.
    static func legendUnit(_ normalized: PatchData.Normalization?) -> String {
        normalized.map { "÷ act. at L\($0.layer) pos \($0.position)" } ?? "logit diff"
    }

    /// Heading lines shared by the map figures: the runs, the scales, the normalisation.
    static func commonLines(_ runs: [PatchData], columns: [Column], normalized: PatchData.Normalization?) -> [String] {
        var lines = runs.map(\.label.provenance)
        let unit = normalized.map { "÷ act. at resid_pre L\($0.layer) pos \($0.position)" } ?? "logit diff"
        var scales = "activation patching and AtP: one diverging scale (\(unit); blue: the patch raises the metric, red: lowers it)"
        if columns.contains(where: \.absolute) { scales += "; |activation patching| and AtP*: one sequential scale" }
        lines.append(scales + (runs.count > 1 ? "; shared by every run" : ""))
        if let n = normalized {
            let left = runs.map { "\($0.withoutDivisor.count)" }.joined(separator: ", ")
            lines.append("each prompt's values divided by its \(n.description) (the paper's grid; the runs' --grid-normalize); "
                         + "prompts where that is 0 or whose clean − corrupt gap is below --min-gap left out: \(left)")
        } else if runs.contains(where: { $0.normalization != nil }) {
            lines.append("raw values: the runs were given different --grid-normalize, so none is applied")
        }
        return lines
    }

    // MARK: Layer × position maps

    /// One row of map panels: a run's grids (one per column) over one template's prompts.
    struct MapRow {
        let run: PatchData
        let template: PromptTemplate
        let grids: [[[Double]]]
    }

    /// Per template drawn (the first `templates` of each run) the rows of the runs that have it.
    static func positionRows(_ runs: [PatchData], site: String, columns: [Column], templates: Int, normalized: Bool) -> [[MapRow]] {
        (0..<templates).map { t in
            runs.compactMap { run in
                guard t < run.templates.count else { return nil }
                let template = run.templates[t]
                let grids = columns.map { c in
                    run.grid(site: site, quantity: c.quantity, prompts: template.prompts, width: template.length,
                             absolute: c.absolute, normalized: normalized)
                }
                return MapRow(run: run, template: template, grids: grids)
            }
        }
    }

    /// The two scales of a figure: diverging over every signed column's cells, sequential over
    /// every magnitude column's, of every panel given (`grids[panel row][column]`).
    static func scales(columns: [Column], grids: [[[[Double]]]]) -> (diverging: ColorScale, sequential: ColorScale) {
        var signed: [Double] = [], magnitudes: [Double] = []
        for row in grids {
            for (c, grid) in zip(columns, row) {
                if c.absolute { magnitudes += grid.joined() } else { signed += grid.joined() }
            }
        }
        return (ColorScale.fitted(signed, kind: .diverging), ColorScale.fitted(magnitudes, kind: .sequential))
    }

    /// The scales of one site's layer × position maps of `runs` (what `positionMaps` colours with).
    static func positionScales(_ runs: [PatchData], site: String, templates limit: Int) -> (diverging: ColorScale, sequential: ColorScale) {
        let runs = runs.filter { $0.positionSites.contains(site) }
        let columns = columns(runs, site: site)
        let count = runs.map(\.templates.count).max() ?? 0
        let rows = positionRows(runs, site: site, columns: columns, templates: limit > 0 ? min(limit, count) : count,
                                normalized: normalization(runs) != nil)
        return scales(columns: columns, grids: rows.flatMap { $0.map(\.grids) })
    }

    /// Every position site's maps, one figure below the other (for `plot patch-map`).
    static func positionMaps(_ runs: [PatchData], templates: Int) -> SVG {
        let sites = StoreName.positionSites.filter { site in runs.contains { $0.positionSites.contains(site) } }
        return Layout.stacked(sites.map { positionMaps(runs, site: $0, templates: templates) })
    }

    /// One site's layer × position maps: per template (the `templates` largest, 0 for all) a row
    /// per run, with the columns of `columns(_:site:)`. Cells are means over the template's prompts;
    /// one diverging and one sequential scale over every panel.
    static func positionMaps(_ runs: [PatchData], site: String, templates limit: Int) -> SVG {
        let runs = runs.filter { $0.positionSites.contains(site) }
        let columns = columns(runs, site: site)
        let normalized = normalization(runs)
        let count = runs.map(\.templates.count).max() ?? 0
        let drawn = limit > 0 ? min(limit, count) : count
        var lines = commonLines(runs, columns: columns, normalized: normalized)
        lines.insert("cells: mean over a template's prompts (position k plays one part in each); columns: token_k, [answer] / [wrong]: "
                     + "each prompt's own answer / wrong token, a|…: a slot whose token varies (hover for its tokens)", at: runs.count)
        lines.append("templates: \(count)" + (drawn < count ? " (the \(drawn) largest drawn; --templates N draws more, 0 all)" : ""))
        let heading = Heading(title: "\(site): patching effect per layer × position, one map per template", lines: lines)

        // Grids first: the scales span every panel.
        let groups = positionRows(runs, site: site, columns: columns, templates: drawn, normalized: normalized != nil)
        let (diverging, sequential) = scales(columns: columns, grids: groups.flatMap { $0.map(\.grids) })

        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        let layers = runs.map(\.layers).max() ?? 0
        let positions = groups.flatMap { $0.map(\.template.length) }.max() ?? 1
        let panelGap = 22.0, left = 30.0
        // Panels fill about 1,150 px (the report is 1,360 wide, the legend takes the rest).
        let cw = min(26, max(8, (1_150 / Double(max(1, columns.count)) - left - panelGap) / Double(positions)))
        let ch = min(22, max(10, 200 / Double(max(1, layers))))
        let labelSize = min(SVG.smallSize, cw * 0.9)
        // Column labels hang down and to the left of their column at 60°: the first panel starts
        // far enough right for the first label.
        let longestLabel = groups.flatMap { $0.flatMap(\.template.labels) }.map { SVG.textWidth($0, size: labelSize) }.max() ?? 0
        let indent = max(0, longestLabel * cos(60 * .pi / 180) - left - cw / 2 + 4)
        var y = heading.height + 4
        var width = 0.0
        var legendTop: Double?
        for (t, group) in groups.enumerated() {
            let shared = group.allSatisfy { $0.template == group[0].template }
            func templateLine(_ row: MapRow) {
                let tpl = row.template
                let members = tpl.prompts.prefix(8).map(String.init).joined(separator: ", ") + (tpl.prompts.count > 8 ? ", …" : "")
                svg.text("template \(t + 1) of \(row.run.templates.count): \(tpl.prompts.count) prompt\(tpl.prompts.count == 1 ? "" : "s") "
                         + "of \(tpl.length) tokens (prompts \(members))" + (shared ? "" : " · run \(row.run.label.id)"), x: 0, y: y + 10, bold: true)
                y += 20
            }
            if shared, let first = group.first { templateLine(first) }
            for (i, row) in group.enumerated() {
                if !shared { templateLine(row) }
                svg.text(row.run.label.short, x: 0, y: y + 9, size: SVG.smallSize, fill: SVG.muted)
                y += 14
                let top = y + 16
                if legendTop == nil { legendTop = top }
                var x = indent
                let gridW = cw * Double(row.template.length), gridH = ch * Double(row.run.layers)
                for (c, grid) in zip(columns, row.grids) {
                    svg.text(c.title, x: x + left, y: y + 9, size: SVG.smallSize, bold: true)
                    let scale = c.absolute ? sequential : diverging
                    for l in 0..<row.run.layers {
                        svg.text("L\(l)", x: x + left - 4, y: top + (Double(l) + 0.5) * ch, anchor: .end, size: SVG.smallSize, middle: true)
                    }
                    Heatmap.cells(&svg, grid, x: x + left, y: top, cellWidth: cw, cellHeight: ch, scale: scale) { l, p, v in
                        "\(site) L\(l), \(row.template.labels[p]) · run \(row.run.label.id) · template \(t + 1) "
                            + "(\(row.template.prompts.count) prompts): \(c.title) \(Markup.number(v))"
                    }
                    if i == group.count - 1 || !shared {
                        for (p, label) in row.template.labels.enumerated() {
                            svg.text(label, x: x + left + (Double(p) + 0.5) * cw + labelSize * 0.35, y: top + gridH + 6, anchor: .end,
                                     size: labelSize, rotate: -60,
                                     title: "position \(p): " + PromptTemplates.describe(row.template.variants[p]))
                        }
                    }
                    x += left + gridW + panelGap
                }
                width = max(width, x)
                y = top + gridH + 6
                if i == group.count - 1 || !shared {
                    let longest = row.template.labels.map { SVG.textWidth($0, size: labelSize) }.max() ?? 0
                    y += longest * sin(60 * .pi / 180) + 8
                }
            }
            y += 10
        }
        if count == 0 {
            svg.text("no prompts stored for this run", x: 0, y: y + 14, fill: SVG.muted)
            y += 28
        }
        let unit = legendUnit(normalized)
        let legendX = width, legendY = (legendTop ?? y) + 4
        var legendW = Legend.colorBar(&svg, diverging, x: legendX, y: legendY, height: 110, label: "effect (\(unit))")
        if columns.contains(where: \.absolute) {
            legendW = max(legendW, Legend.colorBar(&svg, sequential, x: legendX, y: legendY + 150, height: 110, label: "|effect| (\(unit))"))
        }
        svg.width = max(heading.width, legendX + legendW + 8)
        svg.height = max(y, legendY + (columns.contains(where: \.absolute) ? 270 : 120))
        return svg
    }

    // MARK: Layer × head maps

    /// Layer × head maps of the head sites (z, q, k, v, pattern: patched per head over all
    /// positions), means over every prompt; per site a row per run and one diverging and one
    /// sequential scale over that site's panels.
    static func headMaps(_ runs: [PatchData]) -> SVG {
        let runs = runs.filter { !$0.headSites.isEmpty }
        let sites = PatchData.headSites.filter { site in runs.contains { $0.headSites.contains(site) } }
        let allColumns = sites.flatMap { columns(runs, site: $0) }
        let normalized = normalization(runs)
        let heading = Heading(title: "Patching effect per layer × head (\(sites.joined(separator: ", ")): each head patched at every position)",
                              lines: commonLines(runs, columns: allColumns, normalized: normalized).map {
                                  $0.replacingOccurrences(of: "; shared by every run", with: "; per site, shared by every run")
                              } + ["cells: mean over every prompt"])
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        let layers = runs.map(\.layers).max() ?? 0, heads = runs.map(\.heads).max() ?? 0
        let cell = min(24, max(10, 220 / Double(max(1, layers, heads))))
        let left = 30.0, panelGap = 22.0
        var y = heading.height + 4
        var width = heading.width
        let unit = legendUnit(normalized)
        for site in sites {
            let siteRuns = runs.filter { $0.headSites.contains(site) }
            let columns = columns(siteRuns, site: site)
            let grids = siteRuns.map { run in
                columns.map { c in
                    run.grid(site: site, quantity: c.quantity, prompts: run.prompts, width: run.heads, absolute: c.absolute,
                             normalized: normalized != nil)
                }
            }
            let (diverging, sequential) = scales(columns: columns, grids: grids)
            svg.text(site, x: 0, y: y + 12, bold: true)
            y += 20
            let blockTop = y
            var blockWidth = 0.0
            for (run, runGrids) in zip(siteRuns, grids) {
                svg.text(run.label.short, x: 0, y: y + 9, size: SVG.smallSize, fill: SVG.muted)
                y += 14
                let top = y + 30
                var x = 0.0
                for (c, grid) in zip(columns, runGrids) {
                    svg.text(c.title, x: x + left, y: y + 9, size: SVG.smallSize, bold: true)
                    for h in 0..<run.heads {
                        svg.text("H\(h)", x: x + left + (Double(h) + 0.5) * cell, y: top - 5, anchor: .middle, size: min(SVG.smallSize, cell * 0.75))
                    }
                    for l in 0..<run.layers {
                        svg.text("L\(l)", x: x + left - 4, y: top + (Double(l) + 0.5) * cell, anchor: .end, size: SVG.smallSize, middle: true)
                    }
                    Heatmap.cells(&svg, grid, x: x + left, y: top, cellWidth: cell, cellHeight: cell,
                                  scale: c.absolute ? sequential : diverging) { l, h, v in
                        "\(site) L\(l)H\(h) · run \(run.label.id) (\(normalized == nil ? run.prompts.count : run.divisors.count) prompts): \(c.title) \(Markup.number(v))"
                    }
                    x += left + cell * Double(run.heads) + panelGap
                }
                blockWidth = max(blockWidth, x)
                y = top + cell * Double(run.layers) + 10
            }
            let legendX = blockWidth + 8, legendY = blockTop + 44
            var legendW = Legend.colorBar(&svg, diverging, x: legendX, y: legendY, height: 80, label: "effect (\(unit))")
            if columns.contains(where: \.absolute) {
                legendW += 24 + Legend.colorBar(&svg, sequential, x: legendX + legendW + 24, y: legendY, height: 80,
                                                label: "|effect| (\(unit))")
            }
            width = max(width, legendX + legendW + 8)
            y = max(y, legendY + 80 + 8) + 8
        }
        svg.width = width
        svg.height = y
        return svg
    }

    // MARK: Scatter

    /// One point of a scatter: what was patched where, the exact value and the estimate.
    struct Point {
        let site: Int
        let x: Double, y: Double
        let title: String
    }

    /// A run's points for one estimator: those drawn (a seeded sample of at most
    /// `DLAFigures.maxPoints`), how many there are, and how many (0, 0) pairs were left out.
    struct Panel {
        let estimator: String
        let shown: [Point]
        let total: Int
        let zeros: Int
    }

    /// Per run a row: AtP against activation patching (signed, symmetric axes) and AtP* against
    /// |activation patching| (magnitudes, from 0); each estimator's axes fitted to the points
    /// drawn, shared by every run. Points where both values are exactly 0 (positions before the
    /// first token that differs between clean and corrupt prompt) are left out and counted.
    static func scatter(_ runs: [PatchData]) -> SVG {
        let estimators = PatchData.quantities.dropFirst().filter { q in runs.contains { r in r.sites.contains { r.values[$0]?[q] != nil } } }
        var panels: [[Panel]] = []
        for run in runs {
            var row: [Panel] = []
            for e in estimators {
                let (points, zeros) = points(run, estimator: e)
                let shown = Sample.indices(count: points.count, limit: DLAFigures.maxPoints).map { points[$0] }
                row.append(Panel(estimator: e, shown: shown, total: points.count, zeros: zeros))
            }
            panels.append(row)
        }
        var domains: [String: (Double, Double)] = [:]
        for e in estimators {
            var values: [Double] = []
            for row in panels {
                for panel in row where panel.estimator == e { values += panel.shown.flatMap { [$0.x, $0.y] } }
            }
            domains[e] = e == StoreName.atpStar ? DiagonalScatter.magnitudeDomain(values) : DiagonalScatter.symmetricDomain(values)
        }
        return Layout.stacked(zip(runs, panels).map { run, row in
            Layout.sideBySide(row.map { scatterPanel(run, panel: $0, domain: domains[$0.estimator]!) })
        })
    }

    /// The (exact, estimate) pairs of one estimator over every drawn site: exact is activation
    /// patching, |activation patching| for AtP*. Returns the points and how many (0, 0) pairs
    /// were left out.
    static func points(_ run: PatchData, estimator: String) -> ([Point], Int) {
        var points: [Point] = [], zeros = 0
        let magnitude = estimator == StoreName.atpStar
        for (s, site) in PatchData.drawnSites.enumerated() {
            guard let exact = run.values[site]?[StoreName.activation], let estimate = run.values[site]?[estimator] else { continue }
            let perHead = PatchData.headSites.contains(site)
            for cell in exact.keys.sorted(by: { ($0.prompt, $0.layer, $0.index) < ($1.prompt, $1.layer, $1.index) }) {
                guard let e = estimate[cell], let a = exact[cell], e.isFinite, a.isFinite else { continue }
                if e == 0 && a == 0 {
                    zeros += 1
                    continue
                }
                let x = magnitude ? abs(a) : a
                let place = perHead ? "L\(cell.layer)H\(cell.index)" : "L\(cell.layer) pos \(cell.index)"
                points.append(Point(site: s, x: x, y: e,
                                    title: "\(site) \(place) · prompt \(cell.prompt): \(magnitude ? "|activation patching|" : "activation patching") "
                                        + "\(Markup.number(x)), \(quantityName(estimator)) \(Markup.number(e))"))
            }
        }
        return (points, zeros)
    }

    static func scatterPanel(_ run: PatchData, panel: Panel, domain: (Double, Double)) -> SVG {
        let estimator = panel.estimator
        let sampled = panel.shown.count < panel.total
            ? "\(Markup.count(panel.shown.count)) of \(Markup.count(panel.total)) points, seeded sample"
            : "all \(Markup.count(panel.total)) points"
        let magnitude = estimator == StoreName.atpStar
        let exact = magnitude ? "|activation patching|" : "activation patching"
        let heading = Heading(title: "\(quantityName(estimator)) against \(exact)\(magnitude ? " (AtP* estimates |effect|)" : "")",
                              lines: [run.label.provenance,
                                      "per (prompt, site, layer, position or head) · \(sampled) · dashed: equal",
                                      "\(Markup.count(panel.zeros)) pairs where both are exactly 0 (before the first differing token) left out"])
        var plot = DiagonalScatter(heading: heading, domain: domain, xLabel: "\(exact) (logit diff)",
                                   yLabel: "\(quantityName(estimator)) (logit diff)")
        plot.points(panel.shown.map { ($0.x, $0.y, ColorMap.category($0.site), $0.title) })
        let sites = PatchData.drawnSites.enumerated().filter { run.values[$0.element]?[estimator] != nil }
            .map { (color: ColorMap.category($0.offset), label: $0.element) }
        return plot.finish(legend: sites, title: "site")
    }
}

/// Heatmap cells: one rect per value, its colour from a scale, its value in its tooltip.
enum Heatmap {
    /// `grid[row][column]` drawn with its top-left corner at (x, y); NaN cells grey ("no value").
    static func cells(_ svg: inout SVG, _ grid: [[Double]], x: Double, y: Double, cellWidth: Double, cellHeight: Double,
                      scale: ColorScale, title: (Int, Int, Double) -> String) {
        for (r, row) in grid.enumerated() {
            for (c, v) in row.enumerated() {
                svg.rect(x: x + Double(c) * cellWidth, y: y + Double(r) * cellHeight, width: cellWidth, height: cellHeight,
                         fill: scale.color(v), stroke: "#ffffff", strokeWidth: 0.5, title: v.isNaN ? title(r, c, v) + " (no value stored)" : title(r, c, v))
            }
        }
    }
}
