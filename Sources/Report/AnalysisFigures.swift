import Foundation
import Jobs
import ResultsStore

/// A `sinks`, `norms` or `lens` run read back: its label and summaries, by (scope, key, metric).
struct AnalysisData {
    var label: RunLabel
    let values: [String: [String: [String: Double]]]
    /// Keys per scope, in reading order (`SummaryKeyOrder`).
    let keys: [String: [String]]

    init(db: ResultsDatabase, run: RunRecord) throws {
        label = RunLabel(run)
        let rows = try db.summaries(runID: run.id!)
        var values: [String: [String: [String: Double]]] = [:], keys: [String: [String]] = [:]
        for r in rows {
            if values[r.scope]?[r.key] == nil { keys[r.scope, default: []].append(r.key) }
            values[r.scope, default: [:]][r.key, default: [:]][r.metric] = r.value
        }
        (self.values, self.keys) = (values, keys.mapValues(SummaryKeyOrder.sorted))
        label.storedPrompts = Int(values[StoreName.sinkRate]?["all"]?["n"] ?? values[StoreName.norm]?.values.first?["n"]
                                  ?? values[StoreName.scopeLens]?.values.first?["n"] ?? 0)
        if run.command == StoreName.neuronsCommand { label.storedPrompts = try db.prompts(runID: run.id!).count }
    }

    func value(_ scope: String, _ key: String, _ metric: String) -> Double? { values[scope]?[key]?[metric] }

    /// One line for the runs table.
    var headline: String {
        if let v = value(StoreName.sinkRate, "all", "mean") { return "sink rate \(Markup.fixed(v, 3)) (all heads)" }
        if let hook = keys[StoreName.norm]?.last, let a = value(StoreName.norm, hook, "first_mean"), let b = value(StoreName.norm, hook, "rest_mean") {
            return "\(hook) norm \(Markup.fixed(a, 2)) at position 0, \(Markup.fixed(b, 2)) elsewhere"
        }
        if let v = value(StoreName.scopeLens, "final_post", StoreName.prob) { return "final_post probability \(Markup.fixed(v, 4))" }
        if let n = value(StoreName.Neurons.scopeSVD, "W_U", "top_neuron"), let f = value(StoreName.Neurons.scopeSVD, "W_U", "top_null_fraction") {
            return "top entropy neuron N\(Int(n)), null-space fraction \(Markup.fixed(f, 3))"
        }
        return ""
    }

    /// Layers and heads of a sinks run (from its `L{l}H{h}` keys).
    var heads: (layers: Int, heads: Int) {
        var l = -1, h = -1
        for key in keys[StoreName.sinkRate] ?? [] {
            let parts = key.dropFirst().split(separator: "H").compactMap { Int($0) }
            if parts.count == 2 { (l, h) = (max(l, parts[0]), max(h, parts[1])) }
        }
        return (l + 1, h + 1)
    }
}

/// Figures of the one-pass analyses: sink-rate heatmaps, residual norms on a log scale, the
/// logit lens per layer.
enum AnalysisFigures {
    // MARK: Sinks

    /// One layer × head heatmap per run, side by side, on one scale from 0 to 1.
    static func sinkRates(_ runs: [AnalysisData]) -> SVG {
        Layout.sideBySide(runs.map(sinkPanel))
    }

    static func sinkPanel(_ run: AnalysisData) -> SVG {
        let (layers, heads) = run.heads
        let all = run.value(StoreName.sinkRate, "all", "mean")
        let ci = (run.value(StoreName.sinkRate, "all", "ci_low"), run.value(StoreName.sinkRate, "all", "ci_high"))
        let heading = Heading(title: "Attention-sink rate per head (attention to position 0 above eps)",
                              lines: [run.label.provenance, "all heads: \(all.map { Markup.fixed($0, 3) } ?? "–")"
                                      + (ci.0 != nil && ci.1 != nil ? " (95% of units in \(Markup.fixed(ci.0!, 3))–\(Markup.fixed(ci.1!, 3)))" : "")
                                      + ", mean over \(run.label.storedPrompts ?? 0) units"])
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        let scale = ColorScale.sequential(high: 1)
        let cell = min(44, max(18, 360 / Double(max(layers, heads, 1))))
        let left = 48.0, top = heading.height + 34
        let gridW = cell * Double(heads), gridH = cell * Double(layers)
        svg.text("head", x: left + gridW / 2, y: top - 24, anchor: .middle, size: SVG.smallSize, fill: SVG.muted)
        svg.text("layer", x: 12, y: top + gridH / 2, anchor: .middle, size: SVG.smallSize, fill: SVG.muted, rotate: -90)
        for h in 0..<heads { svg.text("H\(h)", x: left + (Double(h) + 0.5) * cell, y: top - 6, anchor: .middle, size: SVG.smallSize) }
        for l in 0..<layers {
            let y = top + Double(l) * cell
            svg.text("L\(l)", x: left - 6, y: y + cell / 2, anchor: .end, size: SVG.smallSize, middle: true)
            for h in 0..<heads {
                let x = left + Double(h) * cell
                guard let v = run.value(StoreName.sinkRate, "L\(l)H\(h)", "mean") else {
                    svg.rect(x: x, y: y, width: cell, height: cell, fill: "#eeeeee", stroke: "#ffffff", title: "L\(l)H\(h): no rows stored")
                    continue
                }
                svg.rect(x: x, y: y, width: cell, height: cell, fill: scale.color(v), stroke: "#ffffff",
                         title: "L\(l)H\(h): sink rate \(Markup.number(v))")
                if cell >= 26 {
                    svg.text(Markup.fixed(v, 2), x: x + cell / 2, y: y + cell / 2, anchor: .middle, size: min(SVG.smallSize, cell * 0.34),
                             fill: scale.rgb(v).textColor, middle: true)
                }
            }
        }
        let legendX = left + gridW + 20
        let legendWidth = Legend.colorBar(&svg, scale, x: legendX, y: top, height: max(gridH, 90), label: "sink rate")
        svg.width = max(heading.width, legendX + legendWidth) + 8
        svg.height = top + max(gridH, 90) + 12
        return svg
    }

    // MARK: Norms

    /// Two panels (position 0, the other positions): the mean norm at each hook, one line per run,
    /// on a log scale.
    static func norms(_ runs: [AnalysisData]) -> SVG {
        let hooks = runs.first?.keys[StoreName.norm] ?? []
        let panels = [("position 0", "first_mean"), ("positions 1 … T−1", "rest_mean")].map { title, metric in
            curvePanel(runs, title: "Residual-stream L2 norm, \(title) (mean over units; log scale)", keys: hooks,
                       labels: hooks.map(hookLabel), yLabel: "L2 norm", log: true) { $0.value(StoreName.norm, $1, metric) }
        }
        return Layout.sideBySide(panels)
    }

    /// `blocks.3.hook_resid_mid` → `mid 3`, `hook_pos_embed` → `pos_embed`.
    static func hookLabel(_ hook: String) -> String {
        let parts = hook.split(separator: ".")
        if parts.first == "blocks", parts.count > 2 { return "\(parts[2].replacingOccurrences(of: "hook_resid_", with: "")) \(parts[1])" }
        return hook.replacingOccurrences(of: "hook_", with: "")
    }

    // MARK: Lens

    /// Two panels: the target's probability and its mean rank per residual read, one line per run.
    static func lens(_ runs: [AnalysisData]) -> SVG {
        let labels = runs.map { $0.keys[StoreName.scopeLens] ?? [] }.max { $0.count < $1.count } ?? []
        let target = runs.first?.label.promptSet.hasSuffix(".jsonl") == true ? "the answer" : "the next token"
        return Layout.sideBySide([
            curvePanel(runs, title: "Logit lens: probability of \(target)", keys: labels, labels: labels, yLabel: "probability",
                       log: false) { $0.value(StoreName.scopeLens, $1, StoreName.prob) },
            curvePanel(runs, title: "Logit lens: rank of \(target) (1 = top; log scale)", keys: labels, labels: labels,
                       yLabel: "mean rank", log: true) { $0.value(StoreName.scopeLens, $1, StoreName.rank) },
        ])
    }

    // MARK: One line per run over named points

    static func curvePanel(_ runs: [AnalysisData], title: String, keys: [String], labels: [String], yLabel: String, log: Bool,
                           value: (AnalysisData, String) -> Double?) -> SVG {
        let ids = runs.map { "\($0.label.id)" }.joined(separator: ", ")
        let sets = Array(Set(runs.map(\.label.promptSet))).sorted().joined(separator: ", ")
        let heading = Heading(title: title, lines: ["\(sets) · run\(runs.count > 1 ? "s" : "") \(ids)"])
        let all = runs.flatMap { r in keys.compactMap { value(r, $0) } }.filter { $0.isFinite && (!log || $0 > 0) }
        let plotTop = heading.height + 8, plotH = 240.0
        let band = max(22, min(48, 560 / Double(max(1, keys.count))))
        let plotW = band * Double(max(1, keys.count))
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        let y: (Double) -> Double
        var left = 60.0
        if log {
            let lo = floor(log10(all.min() ?? 1)), hi = max(lo + 1, ceil(log10(all.max() ?? 10)))
            let scale = LinearScale(domain: (lo, hi), range: (plotTop + plotH, plotTop))
            y = { scale(log10($0)) }
            for k in Int(lo)...Int(hi) {
                let py = scale(Double(k))
                svg.line(x1: left, y1: py, x2: left + plotW, y2: py, stroke: SVG.grid)
                svg.text(k >= 0 && k <= 4 ? Markup.count(Int(pow(10, Double(k)))) : "1e\(k)", x: left - 6, y: py, anchor: .end,
                         size: SVG.smallSize, middle: true)
            }
            svg.line(x1: left, y1: plotTop, x2: left, y2: plotTop + plotH, stroke: SVG.axis)
            svg.text(yLabel, x: 14, y: plotTop + plotH / 2, anchor: .middle, rotate: -90)
        } else {
            let scale = LinearScale.nice(min(0, all.min() ?? 0), max(all.max() ?? 1, 1e-9), range: (plotTop + plotH, plotTop))
            left = Axes.leftWidth(scale) + 10
            Axes.left(&svg, scale, x: left, gridTo: left + plotW, label: yLabel)
            y = { scale($0) }
        }
        svg.line(x1: left, y1: plotTop + plotH, x2: left + plotW, y2: plotTop + plotH, stroke: SVG.axis)
        for (i, label) in labels.enumerated() {
            svg.text(label, x: left + (Double(i) + 0.5) * band, y: plotTop + plotH + 10, anchor: .end, size: SVG.smallSize,
                     rotate: -50)
        }
        for (i, run) in runs.enumerated() {
            let color = ColorMap.category(i)
            var points: [(Double, Double)] = []
            for (j, key) in keys.enumerated() {
                guard let v = value(run, key), v.isFinite, !log || v > 0 else { continue }
                let p = (left + (Double(j) + 0.5) * band, y(v))
                points.append(p)
                svg.circle(cx: p.0, cy: p.1, r: 3, fill: color, title: "\(run.label.short), \(labels[j]): \(Markup.number(v))")
            }
            svg.polyline(points, stroke: color, width: 1.5, title: run.label.short)
        }
        let entries = runs.enumerated().map { (color: ColorMap.category($0.offset), label: $0.element.label.provenance) }
        let labelDepth = (labels.map { SVG.textWidth($0, size: SVG.smallSize) }.max() ?? 0) * 0.77 + 16
        let legendY = plotTop + plotH + labelDepth + 12
        let legendH = Legend.swatches(&svg, entries, x: left, y: legendY, marker: .line)
        svg.width = max(heading.width, left + plotW + 16, left + Legend.swatchesWidth(entries.map(\.label), marker: .line) + 8)
        svg.height = legendY + legendH
        return svg
    }
}
