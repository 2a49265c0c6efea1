import Foundation
import ResultsStore

/// Figures of `train` and `remove-ln` runs: the loss per step with the steps where something
/// happened (a LayerNorm removed) marked.
enum TrainingFigures {
    /// The kind of an event, for its row in the strip: the text before ` of ` (`ln_2` of
    /// `ln_2 of block 3 removed`), else the whole text.
    static func eventKind(_ event: String) -> String {
        if let r = event.range(of: " of ") { return String(event[..<r.lowerBound]) }
        return event
    }

    /// Every run's loss curve on one axis; above it a strip with one row per kind of event
    /// (each event a tick at its step, its text in the tooltip), and faint lines through the plot.
    static func loss(_ runs: [TrainingData]) -> SVG {
        let sets = Array(Set(runs.map(\.label.promptSet))).sorted().joined(separator: ", ")
        let ids = runs.map { "\($0.label.id)" }.joined(separator: ", ")
        let heading = Heading(title: "Training loss per step",
                              lines: ["\(sets) · run\(runs.count > 1 ? "s" : "") \(ids) · ticks and faint lines: events (LayerNorm removals)"])
        let steps = runs.flatMap(\.steps)
        let losses = steps.map(\.loss).filter(\.isFinite)
        var kinds: [String] = []
        for run in runs { for s in run.steps { if let e = s.event, !kinds.contains(eventKind(e)) { kinds.append(eventKind(e)) } } }
        if kinds.count > 8 { kinds = ["events"] }
        let stripTop = heading.height + 4, rowH = 14.0
        let plotTop = stripTop + Double(kinds.count) * rowH + (kinds.isEmpty ? 0 : 10), plotH = 260.0, plotW = 560.0
        let yScale = LinearScale.nice(losses.min() ?? 0, losses.max() ?? 1, range: (plotTop + plotH, plotTop))
        let kindWidth = (kinds.map { SVG.textWidth($0, size: SVG.smallSize) }.max() ?? 0) + 8
        let left = max(Axes.leftWidth(yScale) + 10, kindWidth)
        let xScale = LinearScale.nice(Double(steps.map(\.step).min() ?? 0), Double(max(1, steps.map(\.step).max() ?? 1)),
                                      range: (left, left + plotW))
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        Axes.left(&svg, yScale, x: left, gridTo: left + plotW, label: "loss (nats)")
        Axes.bottom(&svg, xScale, y: plotTop + plotH, gridTo: nil, label: "step")
        for (i, kind) in kinds.enumerated() {
            svg.text(kind, x: left - 6, y: stripTop + (Double(i) + 0.5) * rowH, anchor: .end, size: SVG.smallSize, middle: true)
        }
        for (i, run) in runs.enumerated() {
            let color = ColorMap.category(i)
            for s in run.steps {
                guard let event = s.event else { continue }
                let x = xScale(Double(s.step))
                let row = kinds == ["events"] ? 0 : kinds.firstIndex(of: eventKind(event)) ?? 0
                let tip = "run \(run.label.id), step \(s.step): \(event)"
                svg.line(x1: x, y1: plotTop, x2: x, y2: plotTop + plotH, stroke: color, width: 1, opacity: 0.18)
                svg.line(x1: x, y1: stripTop + Double(row) * rowH + 2, x2: x, y2: stripTop + Double(row + 1) * rowH - 2,
                         stroke: color, width: 2, title: tip)
            }
            let points = run.steps.filter { $0.loss.isFinite }.map { (xScale(Double($0.step)), yScale($0.loss)) }
            svg.polyline(points, stroke: color, width: 1.5, title: run.label.short)
        }
        let entries = runs.enumerated().map { i, run in
            (color: ColorMap.category(i), label: "\(run.label.command): \(run.label.provenance)")
        }
        let legendY = plotTop + plotH + 54
        let legendH = Legend.swatches(&svg, entries, x: left, y: legendY, marker: .line)
        svg.width = max(heading.width, left + plotW + 16, left + Legend.swatchesWidth(entries.map(\.label), marker: .line) + 8)
        svg.height = legendY + legendH
        return svg
    }
}
