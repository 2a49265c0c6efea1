import Foundation
import Jobs
import ResultsStore

/// A `compare` run read back: its summaries and every token's values, per quantity and site.
struct CompareData {
    var label: RunLabel
    let summary: AnalysisData
    /// Model names in site order (`m0` the original), from `runs.model_path`.
    let models: [String]
    /// Per quantity and site (`m0`, `m1`, …), every stored token's value.
    let values: [String: [String: [Double]]]

    init(db: ResultsDatabase, run: RunRecord) throws {
        summary = try AnalysisData(db: db, run: run)
        label = summary.label
        models = run.modelPath.components(separatedBy: " | ").map { URL(fileURLWithPath: $0).lastPathComponent }
        var values: [String: [String: [Double]]] = [:]
        let rows = try db.results(runID: run.id!)
        for r in rows where CompareAnalysis.quantities.contains(r.quantity) {
            values[r.quantity, default: [:]][r.site, default: []].append(r.value)
        }
        self.values = values
        label.storedPrompts = Set(rows.map(\.promptIndex)).count
    }
}

/// The divergence figures of `compare` runs: per quantity, each model's distribution over tokens
/// as a step histogram, its mean (dashed) and the 95% bootstrap interval of the mean (shaded), as
/// the companion's `plot_ce_histogram` / `plot_jsd_histogram` draw them.
enum CompareFigures {
    static let titles = [StoreName.ce: "Cross-entropy of the next token (nats)", StoreName.entropy: "Entropy of the next-token distribution (nats)",
                         StoreName.jsd: "JSD against the original (nats)", StoreName.kl: "KL(original ‖ model) (nats)"]

    static func divergence(_ run: CompareData) -> SVG {
        Layout.sideBySide(CompareAnalysis.quantities.compactMap { q in
            run.values[q].map { histogram(run, quantity: q, sites: $0.keys.sorted { $0.count != $1.count ? $0.count < $1.count : $0 < $1 }) }
        })
    }

    /// One quantity: a step histogram of 40 bins per model on one axis (counts on a linear scale).
    static func histogram(_ run: CompareData, quantity q: String, sites: [String]) -> SVG {
        let heading = Heading(title: titles[q] ?? q, lines: ["\(run.label.provenance) · \(run.label.storedPrompts ?? 0) units"])
        let all = sites.flatMap { run.values[q]![$0]! }.filter(\.isFinite)
        let lo = min(0, all.min() ?? 0), hi = max(all.max() ?? 1, lo + 1e-9), bins = 40
        let width = (hi - lo) / Double(bins)
        let counts = sites.map { site in
            run.values[q]![site]!.reduce(into: [Int](repeating: 0, count: bins)) { c, v in
                if v.isFinite { c[min(bins - 1, max(0, Int((v - lo) / width)))] += 1 }
            }
        }
        let plotTop = heading.height + 8, plotH = 200.0, plotW = 360.0
        let yScale = LinearScale.nice(0, Double(max(1, counts.flatMap { $0 }.max() ?? 1)), range: (plotTop + plotH, plotTop))
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        let left = Axes.leftWidth(yScale) + 10
        let xScale = LinearScale(domain: (lo, hi), range: (left, left + plotW))
        Axes.left(&svg, yScale, x: left, gridTo: left + plotW, label: "tokens")
        Axes.bottom(&svg, xScale, y: plotTop + plotH, label: q)
        var entries: [(color: String, label: String)] = []
        for (i, site) in sites.enumerated() {
            let color = ColorMap.category(Int(site.dropFirst()) ?? i)
            let name = run.models.indices.contains(Int(site.dropFirst()) ?? -1) ? run.models[Int(site.dropFirst())!] : site
            if let a = run.summary.value(q, site, "ci_low"), let b = run.summary.value(q, site, "ci_high") {
                svg.rect(x: xScale(a), y: plotTop, width: max(1, xScale(b) - xScale(a)), height: plotH, fill: color, opacity: 0.15,
                         title: "\(name): 95% interval of the mean \(Markup.number(a))–\(Markup.number(b))")
            }
            var points: [(Double, Double)] = [(xScale(lo), yScale(0))]
            for (k, c) in counts[i].enumerated() {
                points += [(xScale(lo + Double(k) * width), yScale(Double(c))), (xScale(lo + Double(k + 1) * width), yScale(Double(c)))]
            }
            points.append((xScale(hi), yScale(0)))
            svg.polyline(points, stroke: color, width: 1.5, title: name)
            let mean = run.summary.value(q, site, "mean")
            if let mean { svg.line(x1: xScale(mean), y1: plotTop, x2: xScale(mean), y2: plotTop + plotH, stroke: color, dash: "4 3") }
            let ci = [run.summary.value(q, site, "ci_low"), run.summary.value(q, site, "ci_high")].compactMap { $0 }.map { Markup.fixed($0, 4) }
            entries.append((color, "\(name): mean \(mean.map { Markup.fixed($0, 4) } ?? "–") [\(ci.joined(separator: ", "))]"))
        }
        let legendY = plotTop + plotH + 40
        let legendH = Legend.swatches(&svg, entries, x: left, y: legendY, marker: .line)
        svg.width = max(heading.width, left + plotW + 16, left + Legend.swatchesWidth(entries.map(\.label), marker: .line) + 8)
        svg.height = legendY + legendH
        return svg
    }
}
