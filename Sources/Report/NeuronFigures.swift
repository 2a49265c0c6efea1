import Foundation
import Jobs
import ResultsStore

private typealias N = StoreName.Neurons

/// A `neurons` run read back: its summaries, and every last-layer neuron's ‖w_out‖ and
/// null-space fraction (its `w_out` rows), the ablated ones marked.
struct NeuronData {
    let analysis: AnalysisData
    let neurons: [(neuron: Int, norm: Double, nullFraction: Double)]
    let ablated: Set<Int>
    var label: RunLabel { analysis.label }

    init(db: ResultsDatabase, run: RunRecord) throws {
        analysis = try AnalysisData(db: db, run: run)
        var byNeuron: [Int: [String: Double]] = [:]
        for r in try db.results(runID: run.id!) where r.site == N.wOutSite {
            if let n = r.position { byNeuron[n, default: [:]][r.quantity] = r.value }
        }
        neurons = byNeuron.keys.sorted().compactMap { n in
            guard let norm = byNeuron[n]?[N.norm], let f = byNeuron[n]?[N.nullFraction] else { return nil }
            return (n, norm, f)
        }
        ablated = Set(NeuronOptions(json: run.optionsJSON).neuronList)
    }

    /// `k0`, `k1`, … of the cumulative ablation.
    var ks: [String] { (analysis.keys[N.scopeCumulative] ?? []).sorted { Int($0.dropFirst()) ?? 0 < Int($1.dropFirst()) ?? 0 } }
}

/// Figures of `neurons` runs: the cumulative ablation's change in loss and entropy per number of
/// neurons ablated (the companion's cumulative_ablation.py plots), and each model's neurons by
/// ‖w_out‖ and null-space fraction.
enum NeuronFigures {
    /// Two panels, one line per run: the change in mean loss and in mean entropy (% of k = 0)
    /// with the first k neurons mean-ablated.
    static func ablationCurves(_ runs: [NeuronData]) -> SVG {
        let keys = runs.map(\.ks).max { $0.count < $1.count } ?? []
        let labels = keys.map { String($0.dropFirst()) }
        let data = runs.map(\.analysis)
        return Layout.sideBySide([
            AnalysisFigures.curvePanel(data, title: "Cumulative ablation: change in loss (%) with the first k neurons ablated",
                                       keys: keys, labels: labels, yLabel: "Δ loss (%)", log: false) {
                $0.value(N.scopeCumulative, $1, "loss_change_pct")
            },
            AnalysisFigures.curvePanel(data, title: "Cumulative ablation: change in entropy (%)", keys: keys, labels: labels,
                                       yLabel: "Δ entropy (%)", log: false) { $0.value(N.scopeCumulative, $1, "entropy_change_pct") },
        ])
    }

    /// One scatter per run: every last-layer neuron at (‖w_out‖, null-space fraction), the
    /// ablated ones in the second colour.
    static func nullSpace(_ runs: [NeuronData]) -> SVG {
        Layout.sideBySide(runs.map(nullSpacePanel))
    }

    static func nullSpacePanel(_ run: NeuronData) -> SVG {
        let dims = run.analysis.value(N.scopeSVD, "W_U", N.nullDims).map { "\(Int($0))" } ?? "?"
        let heading = Heading(title: "Last-layer neurons: ‖w_out‖ and share in W_U's last \(dims) singular directions",
                              lines: [run.label.provenance, "\(run.neurons.count) neurons; ablated: "
                                      + run.neurons.filter { run.ablated.contains($0.neuron) }.map { "N\($0.neuron)" }.joined(separator: ", ")])
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        let side = 300.0, plotTop = heading.height + 8
        let yScale = LinearScale.nice(0, max(run.neurons.map(\.nullFraction).max() ?? 1, 1e-9), range: (plotTop + side, plotTop))
        let left = Axes.leftWidth(yScale) + 10
        let xDomain = Ticks.nice(0, max(run.neurons.map(\.norm).max() ?? 1, 1e-9))
        let xScale = LinearScale(domain: xDomain, range: (left, left + side))
        Axes.left(&svg, yScale, x: left, gridTo: left + side, label: "null-space fraction")
        Axes.bottom(&svg, xScale, y: plotTop + side, gridTo: plotTop, label: "‖w_out‖")
        svg.beginGroup(fillOpacity: 0.6)
        for p in run.neurons where !run.ablated.contains(p.neuron) {
            svg.circle(cx: xScale(p.norm), cy: yScale(p.nullFraction), r: 2, fill: ColorMap.category(0),
                       title: "N\(p.neuron): ‖w_out‖ \(Markup.number(p.norm)), null-space fraction \(Markup.number(p.nullFraction))")
        }
        svg.endGroup()
        for p in run.neurons where run.ablated.contains(p.neuron) {
            svg.circle(cx: xScale(p.norm), cy: yScale(p.nullFraction), r: 4, fill: ColorMap.category(1),
                       title: "N\(p.neuron) (ablated): ‖w_out‖ \(Markup.number(p.norm)), null-space fraction \(Markup.number(p.nullFraction))")
        }
        let entries = [(color: ColorMap.category(0), label: "neurons"), (color: ColorMap.category(1), label: "ablated")]
        let legendX = left + side + 20
        _ = Legend.swatches(&svg, entries, x: legendX, y: plotTop + 4, marker: .dot)
        svg.width = max(heading.width, legendX + Legend.swatchesWidth(entries.map(\.label), marker: .dot)) + 8
        svg.height = plotTop + side + 44
        return svg
    }
}
