/// A square scatter of an estimate (y) against the exact value (x), both axes on one scale over
/// `domain`, with the dashed diagonal y = x; points are coloured by category, each with its values
/// in a tooltip, and `finish` adds their legend at the right. Used for DLA against the direct
/// effect, AtP against activation patching and AtP* against |activation patching|.
struct DiagonalScatter {
    static let side = 300.0
    let heading: Heading
    let plotTop: Double
    let left: Double
    let xScale: LinearScale
    let yScale: LinearScale
    var svg = SVG(width: 0, height: 0)

    /// The domain of a scatter of signed values: symmetric about 0, the largest |value| plus 5 %,
    /// so that every point is inside and 0 is in the middle (ticks are round values inside it).
    static func symmetricDomain(_ values: [Double]) -> (Double, Double) {
        let m = values.filter(\.isFinite).map(abs).max() ?? 0
        let padded = m > 0 ? m * 1.05 : 1
        return (-padded, padded)
    }

    /// The domain of a scatter of magnitudes: 0 to the largest value plus 5 %.
    static func magnitudeDomain(_ values: [Double]) -> (Double, Double) {
        let m = values.filter(\.isFinite).map(abs).max() ?? 0
        return (0, m > 0 ? m * 1.05 : 1)
    }

    init(heading: Heading, domain: (Double, Double), xLabel: String, yLabel: String) {
        let side = Self.side
        self.heading = heading
        plotTop = heading.height + 8
        yScale = LinearScale(domain: domain, range: (plotTop + side, plotTop))
        left = Axes.leftWidth(yScale) + 10
        xScale = LinearScale(domain: domain, range: (left, left + side))
        heading.draw(&svg)
        Axes.left(&svg, yScale, x: left, gridTo: left + side, label: yLabel)
        Axes.bottom(&svg, xScale, y: plotTop + side, gridTo: plotTop, label: xLabel)
        svg.rect(x: left, y: plotTop, width: side, height: side, fill: "none", stroke: SVG.grid)
        svg.line(x1: xScale(domain.0), y1: yScale(domain.0), x2: xScale(domain.1), y2: yScale(domain.1),
                 stroke: "#555555", width: 1, dash: "5 4")
    }

    /// The points, each at (x, y) with `title` as its tooltip, in one translucent group.
    mutating func points(_ points: [(x: Double, y: Double, color: String, title: String)]) {
        guard !points.isEmpty else { return }
        svg.beginGroup(fillOpacity: 0.6)
        for p in points { svg.circle(cx: xScale(p.x), cy: yScale(p.y), r: 2, fill: p.color, title: p.title) }
        svg.endGroup()
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
