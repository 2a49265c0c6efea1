import Analysis
import Foundation
import Support

/// What a figure shows (title) and which run(s) it shows (lines under it): model, LN mode,
/// prompt set and run id, so that a screenshot of the figure stands alone.
struct Heading {
    var title: String
    var lines: [String]

    static let top = 20.0, lineGap = 15.0

    /// Vertical space the heading takes, including the gap below it.
    var height: Double { Self.top + Double(lines.count) * Self.lineGap + 12 }

    /// The width its longest line needs.
    var width: Double {
        max(SVG.textWidth(title, size: SVG.titleSize) * 1.05, lines.map { SVG.textWidth($0, size: SVG.smallSize + 0.5) }.max() ?? 0)
    }

    func draw(_ svg: inout SVG, x: Double = 0) {
        svg.text(title, x: x, y: Self.top - 4, size: SVG.titleSize, bold: true)
        for (i, line) in lines.enumerated() {
            svg.text(line, x: x, y: Self.top - 4 + Double(i + 1) * Self.lineGap, size: SVG.smallSize + 0.5, fill: SVG.muted)
        }
    }
}

/// Axes with round ticks, gridlines and a label.
enum Axes {
    /// A vertical axis at `x` for `scale` (range in px, top to bottom); gridlines run to `gridTo`.
    static func left(_ svg: inout SVG, _ scale: LinearScale, x: Double, gridTo: Double? = nil, label: String, ticks: Int = 5) {
        let values = scale.ticks(ticks)
        let step = values.count > 1 ? values[1] - values[0] : 1
        for v in values {
            let y = scale(v)
            if let gridTo { svg.line(x1: x, y1: y, x2: gridTo, y2: y, stroke: SVG.grid) }
            svg.line(x1: x - 4, y1: y, x2: x, y2: y, stroke: SVG.axis)
            svg.text(Ticks.label(v, step: step), x: x - 6, y: y, anchor: .end, size: SVG.smallSize, middle: true)
        }
        svg.line(x1: x, y1: scale.range.0, x2: x, y2: scale.range.1, stroke: SVG.axis)
        let widest = values.map { SVG.textWidth(Ticks.label($0, step: step), size: SVG.smallSize) }.max() ?? 0
        let mid = (scale.range.0 + scale.range.1) / 2
        svg.text(label, x: x - widest - 16, y: mid, anchor: .middle, rotate: -90)
    }

    /// A horizontal axis at `y` for `scale`; gridlines run up to `gridTo`.
    static func bottom(_ svg: inout SVG, _ scale: LinearScale, y: Double, gridTo: Double? = nil, label: String, ticks: Int = 5) {
        let values = scale.ticks(ticks)
        let step = values.count > 1 ? values[1] - values[0] : 1
        for v in values {
            let x = scale(v)
            if let gridTo { svg.line(x1: x, y1: y, x2: x, y2: gridTo, stroke: SVG.grid) }
            svg.line(x1: x, y1: y, x2: x, y2: y + 4, stroke: SVG.axis)
            svg.text(Ticks.label(v, step: step), x: x, y: y + 16, anchor: .middle, size: SVG.smallSize)
        }
        svg.line(x1: scale.range.0, y1: y, x2: scale.range.1, y2: y, stroke: SVG.axis)
        svg.text(label, x: (scale.range.0 + scale.range.1) / 2, y: y + 34, anchor: .middle)
    }

    /// Space a left axis needs for its tick labels and its label.
    static func leftWidth(_ scale: LinearScale, ticks: Int = 5) -> Double {
        let values = scale.ticks(ticks)
        let step = values.count > 1 ? values[1] - values[0] : 1
        return (values.map { SVG.textWidth(Ticks.label($0, step: step), size: SVG.smallSize) }.max() ?? 0) + 26
    }
}

/// Legends: a colour bar for a continuous scale, swatches for categories.
enum Legend {
    static let barWidth = 14.0

    /// A vertical colour bar with its top at (x, y), high values on top, ticks on its right and
    /// `label` above it. Returns the width it takes.
    @discardableResult
    static func colorBar(_ svg: inout SVG, _ scale: ColorScale, x: Double, y: Double, height: Double, label: String) -> Double {
        svg.text(label, x: x, y: y - 12, size: SVG.smallSize, fill: SVG.muted)
        let slices = 48
        let sliceHeight = height / Double(slices)
        for i in 0..<slices {
            let v = scale.high - (Double(i) + 0.5) / Double(slices) * (scale.high - scale.low)
            svg.rect(x: x, y: y + Double(i) * sliceHeight, width: barWidth, height: sliceHeight + 0.5, fill: scale.color(v))
        }
        svg.rect(x: x, y: y, width: barWidth, height: height, fill: "none", stroke: SVG.axis, strokeWidth: 0.5)
        let values = Ticks.values(scale.low, scale.high, count: 4)
        let step = values.count > 1 ? values[1] - values[0] : 1
        let axis = LinearScale(domain: (scale.low, scale.high), range: (y + height, y))
        var widest = SVG.textWidth(label, size: SVG.smallSize)
        for v in values {
            var text = Ticks.label(v, step: step)
            if scale.clipped && v == values.last && v == scale.high { text = "≥ " + text }
            if scale.clipped && scale.kind == .diverging && v == values.first && v == scale.low { text = "≤ " + text }
            svg.line(x1: x + barWidth, y1: axis(v), x2: x + barWidth + 3, y2: axis(v), stroke: SVG.axis)
            svg.text(text, x: x + barWidth + 5, y: axis(v), size: SVG.smallSize, middle: true)
            widest = max(widest, barWidth + 5 + SVG.textWidth(text, size: SVG.smallSize))
        }
        return widest
    }

    enum Marker { case dot, line }

    /// One row per item starting at (x, y). Returns the height taken.
    @discardableResult
    static func swatches(_ svg: inout SVG, _ items: [(color: String, label: String)], x: Double, y: Double,
                         marker: Marker, title: String? = nil) -> Double {
        var cy = y
        if let title {
            svg.text(title, x: x, y: cy + 4, size: SVG.smallSize, fill: SVG.muted)
            cy += 16
        }
        for item in items {
            switch marker {
            case .dot: svg.circle(cx: x + 5, cy: cy, r: 4, fill: item.color)
            case .line: svg.line(x1: x, y1: cy, x2: x + 16, y2: cy, stroke: item.color, width: 2.5)
            }
            svg.text(item.label, x: x + (marker == .line ? 22 : 16), y: cy, size: SVG.smallSize, middle: true)
            cy += 16
        }
        return cy - y
    }

    static func swatchesWidth(_ labels: [String], marker: Marker, title: String? = nil) -> Double {
        let widest = labels.map { SVG.textWidth($0, size: SVG.smallSize) }.max() ?? 0
        return max(widest + (marker == .line ? 22 : 16), title.map { SVG.textWidth($0, size: SVG.smallSize) } ?? 0)
    }
}

enum Layout {
    /// Panels side by side, top-aligned, wrapped into rows no wider than `maxWidth`.
    static func sideBySide(_ panels: [SVG], gap: Double = 28, maxWidth: Double = 1360) -> SVG {
        var rows: [[SVG]] = [[]]
        var rowWidth = 0.0
        for p in panels {
            if !rows[rows.count - 1].isEmpty && rowWidth + gap + p.width > maxWidth {
                rows.append([])
                rowWidth = 0
            }
            rowWidth += (rows[rows.count - 1].isEmpty ? 0 : gap) + p.width
            rows[rows.count - 1].append(p)
        }
        func rowWidthOf(_ r: [SVG]) -> Double {
            let panels: Double = r.map(\.width).reduce(0, +)
            return panels + gap * Double(max(0, r.count - 1))
        }
        func rowHeightOf(_ r: [SVG]) -> Double { r.map(\.height).max() ?? 0 }
        let width: Double = rows.map(rowWidthOf).max() ?? 0
        let heights: Double = rows.map(rowHeightOf).reduce(0, +)
        let height: Double = heights + gap * Double(max(0, rows.count - 1))
        var out = SVG(width: width, height: height)
        var y = 0.0
        for r in rows {
            var x = 0.0
            for p in r {
                out.place(p, x: x, y: y)
                x += p.width + gap
            }
            y += rowHeightOf(r) + gap
        }
        return out
    }

    /// Figures one below the other, left-aligned, `gap` px apart.
    static func stacked(_ panels: [SVG], gap: Double = 28) -> SVG {
        var out = SVG(width: panels.map(\.width).max() ?? 0, height: 0)
        var y = 0.0
        for (i, p) in panels.enumerated() {
            out.place(p, x: 0, y: y)
            y += p.height + (i < panels.count - 1 ? gap : 0)
        }
        out.height = y
        return out
    }

    /// A padded copy: `svg` drawn with `margin` px of white around it.
    static func padded(_ svg: SVG, margin: Double = 12) -> SVG {
        var out = SVG(width: svg.width + 2 * margin, height: svg.height + 2 * margin)
        out.place(svg, x: margin, y: margin)
        return out
    }
}

/// Which points a scatter draws when there are too many: a seeded shuffle (SplitMix64,
/// Fisher–Yates), so the same rows give the same picture and layers are not drawn in blocks
/// that hide one another.
enum Sample {
    static let seed: UInt64 = 0

    /// Indices `0..<count` in a seeded random order, at most `limit` of them.
    static func indices(count: Int, limit: Int) -> [Int] {
        var order = Array(0..<count)
        var rng = SplitMix64(seed: seed)
        for i in stride(from: count - 1, to: 0, by: -1) {
            order.swapAt(i, rng.next(below: i + 1))
        }
        return Array(order.prefix(limit))
    }
}

/// Numbers as figures print them.
enum Show {
    /// A percentage: `12.35 %`; float-error sizes in scientific notation (`1.2e-13 %`).
    static func percent(_ v: Double) -> String {
        guard v.isFinite else { return Markup.number(v) }
        if v == 0 { return "0 %" }
        return abs(v) < 0.01 ? String(format: "%.1e %%", v) : String(format: "%.2f %%", v)
    }

    /// `95% CI 11.80–12.91 %`.
    static func interval(_ ci: ConfidenceInterval) -> String {
        "95% CI \(percent(ci.low).replacingOccurrences(of: " %", with: ""))–\(percent(ci.high))"
    }

    /// A count as an integer with thousands separators (`13,856`).
    static func count(_ v: Double) -> String {
        v.isFinite && abs(v) < 1e15 ? Markup.count(Int(v.rounded())) : Markup.number(v)
    }

    /// A value short enough for a heatmap cell: `0.0`, `9.9`, `123`, `≥1k`.
    static func cell(_ v: Double) -> String {
        guard v.isFinite else { return Markup.number(v) }
        if abs(v) >= 999.5 { return v > 0 ? "≥1k" : "≤-1k" }
        return abs(v) < 9.95 ? String(format: "%.1f", v) : String(format: "%.0f", v)
    }
}
