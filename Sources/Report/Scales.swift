import Analysis
import Foundation

/// A linear map from data values to px.
struct LinearScale {
    var domain: (Double, Double)
    var range: (Double, Double)
    /// The tick step when the domain was made to end on ticks (`nice`).
    var step: Double?

    init(domain: (Double, Double), range: (Double, Double), step: Double? = nil) {
        self.domain = domain
        self.range = range
        self.step = step
    }

    /// [lo, hi] widened to whole steps of a round tick step, so the axis starts and ends on a
    /// labelled tick.
    static func nice(_ lo: Double, _ hi: Double, range: (Double, Double), count: Int = 5) -> LinearScale {
        let (a, b) = Ticks.nice(lo, hi, count: count)
        return LinearScale(domain: (a, b), range: range, step: Ticks.step(lo < hi ? lo : a, lo < hi ? hi : b, count: count))
    }

    func callAsFunction(_ v: Double) -> Double {
        let span = domain.1 - domain.0
        guard span != 0 else { return (range.0 + range.1) / 2 }
        return range.0 + (v - domain.0) / span * (range.1 - range.0)
    }

    /// Round tick values inside the domain (steps of 1, 2, 2.5 or 5 × 10^k).
    func ticks(_ count: Int = 5) -> [Double] {
        guard let step, step > 0, (domain.1 - domain.0) / step < 100 else { return Ticks.values(domain.0, domain.1, count: count) }
        let first = (domain.0 / step).rounded(), last = (domain.1 / step).rounded()
        return stride(from: first, through: last, by: 1).map { Ticks.clean($0 * step) }
    }
}

enum Ticks {
    /// The tick step for about `count` ticks over [lo, hi].
    static func step(_ lo: Double, _ hi: Double, count: Int) -> Double {
        let raw = (hi - lo) / Double(max(1, count))
        guard raw > 0, raw.isFinite else { return 1 }
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        return [1, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw * (1 - 1e-9) } ?? 10 * magnitude
    }

    static func values(_ lo: Double, _ hi: Double, count: Int) -> [Double] {
        guard lo.isFinite, hi.isFinite, hi > lo else { return lo.isFinite ? [lo] : [] }
        let s = step(lo, hi, count: count)
        let first = (lo / s).rounded(.up), last = (hi / s).rounded(.down)
        guard last >= first, last - first < 1000 else { return [] }
        return stride(from: first, through: last, by: 1).map { clean($0 * s) }
    }

    /// `k · step` without float noise (0.6, not 0.6000000000000001) and without −0.
    static func clean(_ v: Double) -> Double {
        v == 0 ? 0 : Double(String(format: "%.12g", v)) ?? v
    }

    /// [lo, hi] widened to whole tick steps (so the axis ends on a labelled tick).
    static func nice(_ lo: Double, _ hi: Double, count: Int = 5) -> (Double, Double) {
        guard lo.isFinite, hi.isFinite else { return (0, 1) }
        if hi <= lo { return lo == 0 ? (0, 1) : (lo - abs(lo) * 0.5, lo + abs(lo) * 0.5) }
        let s = step(lo, hi, count: count)
        return ((lo / s).rounded(.down) * s, (hi / s).rounded(.up) * s)
    }

    /// A tick label with as many decimals as the step needs (`0.25`, `10`, `1e-06`).
    static func label(_ v: Double, step: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 1e5 || step < 1e-4 { return String(format: "%g", v) }
        var decimals = max(0, Int((-log10(step)).rounded(.up)))
        if abs((step * pow(10, Double(decimals))).rounded() - step * pow(10, Double(decimals))) > 1e-6 { decimals += 1 }
        return String(format: "%.\(decimals)f", v)
    }
}

/// An sRGB colour.
struct RGB: Equatable {
    var r: Double, g: Double, b: Double

    init(hex: String) {
        let v = UInt32(hex.dropFirst(), radix: 16) ?? 0
        r = Double((v >> 16) & 0xFF) / 255
        g = Double((v >> 8) & 0xFF) / 255
        b = Double(v & 0xFF) / 255
    }

    init(r: Double, g: Double, b: Double) {
        self.r = r
        self.g = g
        self.b = b
    }

    var hex: String {
        func byte(_ x: Double) -> Int { Int((min(1, max(0, x)) * 255).rounded()) }
        return String(format: "#%02x%02x%02x", byte(r), byte(g), byte(b))
    }

    /// WCAG relative luminance: above ~0.4 dark text reads better than white.
    var luminance: Double {
        func linear(_ c: Double) -> Double { c <= 0.03928 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4) }
        return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    }

    /// Text colour that reads on this background.
    var textColor: String { luminance > 0.35 ? SVG.ink : "#ffffff" }
}

/// Colour maps: sequential (errors: pale = small), diverging (effects: red < 0 < blue, as the
/// `RdBu` scale of TransformerLens's patching plots), and categorical (runs, sites, layers).
enum ColorMap {
    /// ColorBrewer YlOrRd, 9 classes.
    static let sequentialStops = ["#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026"]
        .map(RGB.init(hex:))
    /// ColorBrewer RdBu, 11 classes, red (negative) to blue (positive).
    static let divergingStops = ["#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7", "#d1e5f0", "#92c5de",
                                 "#4393c3", "#2166ac", "#053061"].map(RGB.init(hex:))
    /// Viridis, for ordered categories (layers).
    static let viridisStops = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]
        .map(RGB.init(hex:))
    /// Tableau 10, for unordered categories (runs, sites).
    static let categorical = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"]

    /// Interpolates `stops` at t ∈ [0, 1].
    static func interpolate(_ stops: [RGB], _ t: Double) -> RGB {
        let t = t.isFinite ? min(1, max(0, t)) : 0
        let x = t * Double(stops.count - 1)
        let i = min(stops.count - 2, Int(x.rounded(.down))), f = x - Double(i)
        let a = stops[i], b = stops[i + 1]
        return RGB(r: a.r + (b.r - a.r) * f, g: a.g + (b.g - a.g) * f, b: a.b + (b.b - a.b) * f)
    }

    /// The colour of category `index` of `count` ordered ones (viridis, without its palest end,
    /// which vanishes on white).
    static func ordered(_ index: Int, of count: Int) -> String {
        interpolate(viridisStops, count <= 1 ? 0 : 0.88 * Double(index) / Double(count - 1)).hex
    }

    static func category(_ index: Int) -> String { categorical[index % categorical.count] }
}

/// A colour scale for a value domain: `sequential` over [0, hi] or `diverging` over [−m, m].
struct ColorScale {
    enum Kind { case sequential, diverging }
    var kind: Kind
    var low: Double
    var high: Double
    /// True when values above `high` exist and are drawn at the top colour (the legend says `≥`).
    var clipped = false

    static func sequential(high: Double, clipped: Bool = false) -> ColorScale {
        ColorScale(kind: .sequential, low: 0, high: high > 0 && high.isFinite ? high : 1, clipped: clipped)
    }

    /// Symmetric about 0 with the largest |value| at the ends.
    static func diverging(maxAbs: Double, clipped: Bool = false) -> ColorScale {
        let m = maxAbs > 0 && maxAbs.isFinite ? maxAbs : 1
        return ColorScale(kind: .diverging, low: -m, high: m, clipped: clipped)
    }

    /// A scale for every value of `values` (one scale shared by the panels they come from): up to
    /// the largest |value|, rounded up to a tick. When a few values lie far out (the largest above
    /// `outlierFactor` times the 98th percentile of the nonzero |values|) the scale stops at that
    /// percentile instead, so that one outlying cell does not wash out every other; those cells
    /// take the end colour, their value in the tooltip, and the legend says `≥` (`≤`).
    static func fitted(_ values: [Double], kind: Kind, outlierFactor: Double = 3) -> ColorScale {
        let magnitudes = values.filter(\.isFinite).map(abs).filter { $0 > 0 }.sorted()
        guard let top = magnitudes.last else { return kind == .diverging ? .diverging(maxAbs: 1) : .sequential(high: 1) }
        let p98 = Metrics.quantile(sorted: magnitudes, 0.98)
        let clipped = top > outlierFactor * p98
        let high = Ticks.nice(0, clipped ? p98 : top, count: 4).1
        return kind == .diverging ? .diverging(maxAbs: high, clipped: clipped && top > high)
            : .sequential(high: high, clipped: clipped && top > high)
    }

    func rgb(_ v: Double) -> RGB {
        let t = (v - low) / (high - low)
        return ColorMap.interpolate(kind == .sequential ? ColorMap.sequentialStops : ColorMap.divergingStops, t)
    }

    func color(_ v: Double) -> String { v.isFinite ? rgb(v).hex : "#d9d9d9" }
}
