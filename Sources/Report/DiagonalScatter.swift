/// A square scatter of an estimate (y) against the exact value (x), both on one nice scale over
/// `range`, with the dashed diagonal y = x; points are coloured by category and `finish` adds their
/// legend at the right. Used for DLA against the direct effect and AtP against activation patching.
struct DiagonalScatter {
    static let side = 300.0
    let heading: Heading
    let plotTop: Double
    let left: Double
    let xScale: LinearScale
    let yScale: LinearScale
    var svg = SVG(width: 0, height: 0)

    init(heading: Heading, range: (Double, Double), xLabel: String, yLabel: String) {
        let side = Self.side
        self.heading = heading
        plotTop = heading.height + 8
        yScale = LinearScale.nice(range.0, range.1, range: (plotTop + side, plotTop))
        let domain = yScale.domain
        left = Axes.leftWidth(yScale) + 10
        xScale = LinearScale(domain: domain, range: (left, left + side), step: yScale.step)
        heading.draw(&svg)
        Axes.left(&svg, yScale, x: left, gridTo: left + side, label: yLabel)
        Axes.bottom(&svg, xScale, y: plotTop + side, gridTo: plotTop, label: xLabel)
        svg.line(x1: xScale(domain.0), y1: yScale(domain.0), x2: xScale(domain.1), y2: yScale(domain.1),
                 stroke: "#555555", width: 1, dash: "5 4")
    }

    mutating func point(x: Double, y: Double, color: String) {
        svg.circle(cx: xScale(x), cy: yScale(y), r: 2, fill: color, opacity: 0.6)
    }

    /// The figure with the legend of `entries` titled `title` beside the plot.
    func finish(legend entries: [(color: String, label: String)], title: String) -> SVG {
        var out = svg
        let legendX = left + Self.side + 20
        Legend.swatches(&out, entries, x: legendX, y: plotTop + 4, marker: .dot, title: title)
        out.width = max(heading.width, legendX + Legend.swatchesWidth(entries.map(\.label), marker: .dot, title: title)) + 8
        out.height = plotTop + Self.side + 44
        return out
    }
}
