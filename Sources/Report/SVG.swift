import Foundation

/// An SVG drawing being built, in px, elements in paint order. Every attribute value and every
/// text goes through `Markup.escape`; styling is by attributes only, so a drawing looks the same
/// inline in the report and alone in a file.
struct SVG {
    var width: Double
    var height: Double
    private(set) var elements: [String] = []

    /// Sizes of the report's type (px).
    static let fontSize = 12.0, titleSize = 14.0, smallSize = 10.5
    static let fontFamily = "DejaVu Sans, Helvetica, Arial, sans-serif"
    static let ink = "#222222", muted = "#666666", grid = "#e3e3e3", axis = "#888888"

    init(width: Double, height: Double) {
        self.width = width
        self.height = height
    }

    enum Anchor: String { case start, middle, end }

    /// ` name="value"` for each attribute that has a value.
    private static func attributes(_ pairs: [(String, String?)]) -> String {
        pairs.compactMap { name, value in value.map { " \(name)=\"\(Markup.escape($0))\"" } }.joined()
    }

    private mutating func element(_ name: String, _ pairs: [(String, String?)], title: String? = nil) {
        let attrs = Self.attributes(pairs)
        if let title {
            elements.append("<\(name)\(attrs)><title>\(Markup.escape(title))</title></\(name)>")
        } else {
            elements.append("<\(name)\(attrs)/>")
        }
    }

    private static func c(_ v: Double) -> String { Markup.coordinate(v) }

    /// A rectangle; `title` is its tooltip.
    mutating func rect(x: Double, y: Double, width: Double, height: Double, fill: String, stroke: String? = nil,
                       strokeWidth: Double? = nil, opacity: Double? = nil, title: String? = nil) {
        element("rect", [("x", Self.c(x)), ("y", Self.c(y)), ("width", Self.c(max(0, width))), ("height", Self.c(max(0, height))),
                         ("fill", fill), ("stroke", stroke), ("stroke-width", strokeWidth.map(Self.c)),
                         ("fill-opacity", opacity.map(Self.c))], title: title)
    }

    mutating func line(x1: Double, y1: Double, x2: Double, y2: Double, stroke: String = axis, width: Double = 1,
                       dash: String? = nil, opacity: Double? = nil, title: String? = nil) {
        element("line", [("x1", Self.c(x1)), ("y1", Self.c(y1)), ("x2", Self.c(x2)), ("y2", Self.c(y2)),
                         ("stroke", stroke), ("stroke-width", Self.c(width)), ("stroke-dasharray", dash),
                         ("stroke-opacity", opacity.map(Self.c))], title: title)
    }

    mutating func circle(cx: Double, cy: Double, r: Double, fill: String, opacity: Double? = nil, stroke: String? = nil,
                         title: String? = nil) {
        element("circle", [("cx", Self.c(cx)), ("cy", Self.c(cy)), ("r", Self.c(r)), ("fill", fill),
                           ("fill-opacity", opacity.map(Self.c)), ("stroke", stroke)], title: title)
    }

    /// A line through `points` (no fill).
    mutating func polyline(_ points: [(Double, Double)], stroke: String, width: Double = 1.5, title: String? = nil) {
        guard points.count > 1 else { return }
        let list = points.map { "\(Self.c($0.0)),\(Self.c($0.1))" }.joined(separator: " ")
        element("polyline", [("points", list), ("fill", "none"), ("stroke", stroke), ("stroke-width", Self.c(width)),
                             ("stroke-linejoin", "round")], title: title)
    }

    /// Text at (x, y); y is the baseline unless `middle` (then the text is centred on y).
    /// `rotate` turns it (degrees) about (x, y).
    mutating func text(_ s: String, x: Double, y: Double, anchor: Anchor = .start, size: Double = fontSize,
                       fill: String = ink, bold: Bool = false, middle: Bool = false, rotate: Double? = nil,
                       title: String? = nil) {
        let attrs = Self.attributes([
            ("x", Self.c(x)), ("y", Self.c(y)), ("text-anchor", anchor == .start ? nil : anchor.rawValue),
            ("font-size", size == Self.fontSize ? nil : Self.c(size)), ("fill", fill == Self.ink ? nil : fill),
            ("font-weight", bold ? "bold" : nil), ("dy", middle ? "0.35em" : nil),
            ("transform", rotate.map { "rotate(\(Self.c($0)) \(Self.c(x)) \(Self.c(y)))" }),
        ])
        let tip = title.map { "<title>\(Markup.escape($0))</title>" } ?? ""
        elements.append("<text\(attrs)>\(tip)\(Markup.escape(s))</text>")
    }

    /// Starts a group whose children share `fillOpacity` (saves repeating it on thousands of
    /// points); `endGroup` closes it.
    mutating func beginGroup(fillOpacity: Double) {
        elements.append("<g fill-opacity=\"\(Self.c(fillOpacity))\">")
    }

    mutating func endGroup() { elements.append("</g>") }

    /// Draws `child` with its origin at (x, y).
    mutating func place(_ child: SVG, x: Double, y: Double) {
        elements.append("<g transform=\"translate(\(Self.c(x)) \(Self.c(y)))\">")
        elements += child.elements
        elements.append("</g>")
    }

    /// The `<svg>` element. `standalone` adds the XML declaration and the SVG namespace a file
    /// needs (inline in HTML the parser supplies the namespace); `label` names it for screen
    /// readers.
    func render(label: String, standalone: Bool) -> String {
        let namespace = standalone ? " xmlns=\"http://www.w3.org/2000/svg\"" : ""
        let head = (standalone ? "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" : "")
            + "<svg\(namespace)" + Self.attributes([
                ("width", Self.c(width)), ("height", Self.c(height)), ("viewBox", "0 0 \(Self.c(width)) \(Self.c(height))"),
                ("font-family", Self.fontFamily), ("font-size", Self.c(Self.fontSize)), ("fill", Self.ink),
                ("role", "img"), ("aria-label", label),
            ]) + ">"
        return ([head, "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>"] + elements + ["</svg>"]).joined(separator: "\n")
    }

    /// Approximate width of `s` in px at `size` (layout only: DejaVu Sans averages ~0.6 em).
    static func textWidth(_ s: String, size: Double = fontSize) -> Double {
        Double(s.count) * size * 0.6
    }
}
