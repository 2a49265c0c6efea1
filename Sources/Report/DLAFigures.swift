import Analysis
import Foundation

/// Figures of `dla` runs: per-head NMAE heatmaps, per-layer NMAE with bootstrap intervals, DLA
/// against the exact direct effect.
enum DLAFigures {
    /// Points a scatter draws at most (a seeded sample beyond that).
    static let maxPoints = 4000

    // MARK: Per-head heatmap

    /// One heatmap per run, side by side, on one colour scale so that colours compare.
    static func headNMAE(_ runs: [DLAData]) -> SVG {
        let scale = headScale(runs)
        return Layout.sideBySide(runs.map { headNMAEPanel($0, scale: scale) })
    }

    /// 0 to the largest per-head NMAE (at least 1 %); when a few heads are far above the rest
    /// (a head whose direct effect is near 0 can have NMAE in the thousands), the scale stops at
    /// the 95th percentile and those heads take the top colour, their value in the cell.
    static func headScale(_ runs: [DLAData]) -> ColorScale {
        let values = runs.flatMap { $0.nmae.perHead.values }.filter(\.isFinite).sorted()
        guard let top = values.last else { return .sequential(high: 1) }
        let p95 = Metrics.quantile(sorted: values, 0.95)
        let high = max(1, Ticks.nice(0, p95 > 0 && top > 2 * p95 ? p95 : top, count: 4).1)
        return .sequential(high: high, clipped: top > high)
    }

    static func headNMAEPanel(_ run: DLAData, scale: ColorScale) -> SVG {
        var lines = [run.label.provenance]
        lines.append(run.pairs.isEmpty ? "no head rows stored"
                     : "all heads: \(Show.percent(run.nmae.headsGlobal)) (\(Show.interval(run.intervals.headsGlobal))), "
                        + "\(run.label.storedPrompts ?? 0) prompts")
        let heading = Heading(title: "Per-head NMAE (%), DLA vs exact direct effect", lines: lines)
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        let cell = min(44, max(18, 360 / Double(max(run.layers, run.heads, 1))))
        let left = 48.0, top = heading.height + 34
        let gridW = cell * Double(run.heads), gridH = cell * Double(run.layers)
        let stats = Dictionary(uniqueKeysWithValues: run.ranked.map { ($0.component, $0) })
        svg.text("head", x: left + gridW / 2, y: top - 24, anchor: .middle, size: SVG.smallSize, fill: SVG.muted)
        svg.text("layer", x: 12, y: top + gridH / 2, anchor: .middle, size: SVG.smallSize, fill: SVG.muted, rotate: -90)
        for h in 0..<run.heads {
            svg.text("H\(h)", x: left + (Double(h) + 0.5) * cell, y: top - 6, anchor: .middle, size: SVG.smallSize)
        }
        let valueSize = min(SVG.smallSize, cell * 0.34)
        for l in 0..<run.layers {
            let y = top + Double(l) * cell
            svg.text("L\(l)", x: left - 6, y: y + cell / 2, anchor: .end, size: SVG.smallSize, middle: true)
            for h in 0..<run.heads {
                let head = Component.head(layer: l, head: h), name = head.description
                let x = left + Double(h) * cell
                guard let v = run.nmae.perHead[head], let s = stats[head] else {
                    svg.rect(x: x, y: y, width: cell, height: cell, fill: "#eeeeee", stroke: "#ffffff", title: "\(name): no rows stored")
                    continue
                }
                svg.rect(x: x, y: y, width: cell, height: cell, fill: scale.color(v), stroke: "#ffffff",
                         title: "\(name): NMAE \(Markup.number(v)) % over \(s.prompts) prompts; mean |DE| \(Markup.number(s.meanAbsDE))")
                if cell >= 26 {
                    svg.text(Show.cell(v), x: x + cell / 2, y: y + cell / 2, anchor: .middle, size: valueSize,
                             fill: v.isFinite ? scale.rgb(v).textColor : SVG.ink, middle: true)
                }
            }
        }
        let legendX = left + gridW + 20
        let legendWidth = Legend.colorBar(&svg, scale, x: legendX, y: top, height: max(gridH, 90), label: "NMAE %")
        svg.width = max(heading.width, legendX + legendWidth) + 8
        svg.height = top + max(gridH, 90) + 12
        return svg
    }

    // MARK: Per-layer NMAE with intervals

    /// What the runs' bootstrap resampled, in words.
    static func bootstrapText(_ runs: [DLAData]) -> String {
        let schemes = Set(runs.map(\.bootstrap))
        if schemes == [.pairs] { return "(prompt, head) pairs" }
        if schemes == [.crossed] { return "heads and prompts drawn independently (crossed, as the paper's analysis)" }
        return "heads and prompts (crossed) or (prompt, head) pairs, as each run was made"
    }

    /// Every run's per-layer NMAE on one axis, each point with its bootstrap 95% interval.
    static func layerNMAE(_ runs: [DLAData]) -> SVG {
        let sets = Array(Set(runs.map(\.label.promptSet))).sorted().joined(separator: ", ")
        let ids = runs.map { "\($0.label.id)" }.joined(separator: ", ")
        let heading = Heading(
            title: "Per-layer NMAE (%) of DLA vs exact direct effect, bootstrap 95% CI",
            lines: ["\(sets) · run\(runs.count > 1 ? "s" : "") \(ids) · \(Markup.count(Metrics.bootstrapResamples)) resamples of "
                    + bootstrapText(runs)])
        let layers = runs.map(\.layers).max() ?? 0
        var highest = 1.0
        for run in runs {
            for (key, v) in run.nmae.perLayer where v.isFinite {
                highest = max(highest, v, run.intervals.perLayer[key].map { $0.high.isFinite ? $0.high : 0 } ?? 0)
            }
        }
        let plotTop = heading.height + 8, plotH = 220.0
        let yScale = LinearScale.nice(0, highest, range: (plotTop + plotH, plotTop))
        let yDomain = yScale.domain
        let left = Axes.leftWidth(yScale) + 10
        let band = max(36, min(64, 560 / Double(max(1, layers))))
        let plotW = band * Double(max(1, layers))
        var svg = SVG(width: 0, height: 0)
        heading.draw(&svg)
        Axes.left(&svg, yScale, x: left, gridTo: left + plotW, label: "NMAE %")
        svg.line(x1: left, y1: plotTop + plotH, x2: left + plotW, y2: plotTop + plotH, stroke: SVG.axis)
        for l in 0..<layers {
            svg.text("L\(l)", x: left + (Double(l) + 0.5) * band, y: plotTop + plotH + 16, anchor: .middle, size: SVG.smallSize)
        }
        svg.text("layer", x: left + plotW / 2, y: plotTop + plotH + 34, anchor: .middle)
        let spread = min(12, band / Double(runs.count + 1))
        for (i, run) in runs.enumerated() {
            let color = ColorMap.category(i)
            let dx = (Double(i) - Double(runs.count - 1) / 2) * spread
            var points: [(Double, Double)] = []
            for l in 0..<run.layers {
                guard let v = run.nmae.perLayer[l], v.isFinite else { continue }
                let x = left + (Double(l) + 0.5) * band + dx
                points.append((x, yScale(v)))
                let tip = "\(run.label.short), L\(l): NMAE \(Show.percent(v))"
                if let ci = run.intervals.perLayer[l], ci.low.isFinite, ci.high.isFinite {
                    let (y0, y1) = (yScale(ci.low), yScale(min(ci.high, yDomain.1)))
                    svg.line(x1: x, y1: y0, x2: x, y2: y1, stroke: color, width: 1.5)
                    svg.line(x1: x - 4, y1: y0, x2: x + 4, y2: y0, stroke: color, width: 1.5)
                    svg.line(x1: x - 4, y1: y1, x2: x + 4, y2: y1, stroke: color, width: 1.5)
                    svg.circle(cx: x, cy: yScale(v), r: 3.5, fill: color, title: tip + " (\(Show.interval(ci)))")
                } else {
                    svg.circle(cx: x, cy: yScale(v), r: 3.5, fill: color, title: tip)
                }
            }
            svg.polyline(points, stroke: color, width: 1.2)
        }
        let entries = runs.enumerated().map { i, run in
            (color: ColorMap.category(i),
             label: "\(run.label.short): all heads \(Show.percent(run.nmae.headsGlobal)) (\(Show.interval(run.intervals.headsGlobal)))"
                + (run.intervalsStored ? "" : " — interval computed now, not stored with the run"))
        }
        let legendY = plotTop + plotH + 56
        let legendH = Legend.swatches(&svg, entries, x: left, y: legendY, marker: .line)
        svg.width = max(heading.width, left + plotW + 16, left + Legend.swatchesWidth(entries.map(\.label), marker: .line) + 8)
        svg.height = legendY + legendH
        return svg
    }

    // MARK: Scatter

    /// One scatter per run, side by side, on the same axes so that the runs compare: symmetric
    /// about 0 and fitted to the points drawn (the largest |value| of any run plus 5 %).
    static func scatter(_ runs: [DLAData]) -> SVG {
        let samples = runs.map { Sample.indices(count: $0.pairs.count, limit: maxPoints) }
        let drawn = zip(runs, samples).flatMap { run, shown in shown.flatMap { [run.pairs[$0].dla, run.pairs[$0].directEffect] } }
        let domain = DiagonalScatter.symmetricDomain(drawn)
        return Layout.sideBySide(zip(runs, samples).map { scatterPanel($0, shown: $1, domain: domain) })
    }

    /// `shown`: the pairs drawn; `domain`: the values both axes show.
    static func scatterPanel(_ run: DLAData, shown: [Int], domain: (Double, Double)) -> SVG {
        let n = run.pairs.count
        let sampled = shown.count < n ? "\(Markup.count(shown.count)) of \(Markup.count(n)) (prompt, head) pairs, seeded sample"
                                      : "all \(Markup.count(n)) (prompt, head) pairs"
        let heading = Heading(title: "DLA against the exact direct effect, per (prompt, head)",
                              lines: [run.label.provenance, "\(sampled) · colour: layer · dashed: DLA = DE"])
        var plot = DiagonalScatter(heading: heading, domain: domain, xLabel: "exact direct effect (logit units)",
                                   yLabel: "DLA (logit units)")
        let side = DiagonalScatter.side
        if n == 0 {
            plot.svg.text("no head rows stored", x: plot.left + side / 2, y: plot.plotTop + side / 2, anchor: .middle, fill: SVG.muted)
        } else {
            plot.svg.text("NMAE \(Show.percent(run.nmae.headsGlobal))", x: plot.left + 8, y: plot.plotTop + 16, bold: true)
        }
        plot.points(shown.compactMap { i in
            let p = run.pairs[i]
            guard p.dla.isFinite, p.directEffect.isFinite, let l = p.component.headLayer else { return nil }
            return (p.directEffect, p.dla, ColorMap.ordered(l, of: run.layers),
                    "prompt \(p.prompt) \(p.component): DE \(Markup.number(p.directEffect)), DLA \(Markup.number(p.dla))")
        })
        return plot.finish(legend: layerEntries(run.layers), title: "layer")
    }

    /// Legend rows for layers: every layer up to 16, else about 12 evenly spaced ones.
    static func layerEntries(_ layers: Int) -> [(color: String, label: String)] {
        let step = layers <= 16 ? 1 : Int((Double(layers) / 12).rounded(.up))
        return stride(from: 0, to: layers, by: step).map { (ColorMap.ordered($0, of: layers), "L\($0)") }
    }
}
