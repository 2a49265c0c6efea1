import Foundation

/// A TransformerLens hook point: `hook_embed`, `blocks.3.attn.hook_pattern`, `ln_final.hook_scale`…
///
/// `description` is the exact TransformerLens name, so cache keys, CLI flags and database rows
/// read the same as a TransformerLens notebook. The parser also takes short forms
/// (`resid_pre.3`, `pattern.0`, `ln1.scale.2`, `ln_final.scale`).
public struct HookName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public enum Point: String, CaseIterable, Sendable {
        case embed = "hook_embed"
        case posEmbed = "hook_pos_embed"
        case residPre = "hook_resid_pre"
        case ln1Scale = "ln1.hook_scale"
        case ln1Normalized = "ln1.hook_normalized"
        case q = "attn.hook_q"
        case k = "attn.hook_k"
        case v = "attn.hook_v"
        case attnScores = "attn.hook_attn_scores"
        case pattern = "attn.hook_pattern"
        case z = "attn.hook_z"
        case result = "attn.hook_result"
        case attnOut = "hook_attn_out"
        case residMid = "hook_resid_mid"
        case ln2Scale = "ln2.hook_scale"
        case ln2Normalized = "ln2.hook_normalized"
        case mlpPre = "mlp.hook_pre"
        case mlpPost = "mlp.hook_post"
        case mlpOut = "hook_mlp_out"
        case residPost = "hook_resid_post"
        case lnFinalScale = "ln_final.hook_scale"
        case lnFinalNormalized = "ln_final.hook_normalized"

        /// Points that belong to a block (named `blocks.L.…`).
        public var isPerLayer: Bool {
            switch self {
            case .embed, .posEmbed, .lnFinalScale, .lnFinalNormalized: false
            default: true
            }
        }

        /// Short names as TransformerLens's `utils.get_act_name` knows them.
        public var shortName: String {
            switch self {
            case .embed: "embed"
            case .posEmbed: "pos_embed"
            case .residPre: "resid_pre"
            case .ln1Scale: "ln1.scale"
            case .ln1Normalized: "ln1.normalized"
            case .q: "q"
            case .k: "k"
            case .v: "v"
            case .attnScores: "attn_scores"
            case .pattern: "pattern"
            case .z: "z"
            case .result: "result"
            case .attnOut: "attn_out"
            case .residMid: "resid_mid"
            case .ln2Scale: "ln2.scale"
            case .ln2Normalized: "ln2.normalized"
            case .mlpPre: "pre"
            case .mlpPost: "post"
            case .mlpOut: "mlp_out"
            case .residPost: "resid_post"
            case .lnFinalScale: "ln_final.scale"
            case .lnFinalNormalized: "ln_final.normalized"
            }
        }

        /// Order of computation inside a block, for sorting and for the forward pass.
        var order: Int { Point.allCases.firstIndex(of: self)! }
    }

    public let layer: Int?
    public let point: Point

    public init(_ point: Point, layer: Int? = nil) {
        precondition(point.isPerLayer == (layer != nil), "\(point) \(point.isPerLayer ? "needs" : "takes no") layer")
        self.point = point
        self.layer = layer
    }

    public static func embed() -> HookName { HookName(.embed) }
    public static func posEmbed() -> HookName { HookName(.posEmbed) }
    public static func block(_ layer: Int, _ point: Point) -> HookName { HookName(point, layer: layer) }

    public var description: String {
        if let layer { return "blocks.\(layer).\(point.rawValue)" }
        return point.rawValue
    }

    /// Parses a full TransformerLens name or a short form; `nil` when it is neither.
    public init?(parsing text: String) {
        let s = text.trimmingCharacters(in: .whitespaces)
        for point in Point.allCases where !point.isPerLayer {
            if s == point.rawValue || s == point.shortName { self.init(point); return }
        }
        // blocks.L.<point>
        if s.hasPrefix("blocks.") {
            let rest = s.dropFirst("blocks.".count)
            guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), layer >= 0 else { return nil }
            let name = String(rest[rest.index(after: dot)...])
            guard let point = Point.allCases.first(where: { $0.isPerLayer && $0.rawValue == name }) else { return nil }
            self.init(point, layer: layer)
            return
        }
        // short.L
        guard let dot = s.lastIndex(of: "."), let layer = Int(s[s.index(after: dot)...]), layer >= 0 else { return nil }
        let name = String(s[..<dot])
        guard let point = Point.allCases.first(where: { $0.isPerLayer && ($0.shortName == name || $0.rawValue == name) })
        else { return nil }
        self.init(point, layer: layer)
    }

    /// Every hook point of a model with `nLayers` blocks, in computation order.
    public static func all(nLayers: Int) -> [HookName] {
        var names = [HookName(.embed), HookName(.posEmbed)]
        for l in 0..<nLayers {
            for p in Point.allCases where p.isPerLayer { names.append(HookName(p, layer: l)) }
        }
        names.append(HookName(.lnFinalScale))
        names.append(HookName(.lnFinalNormalized))
        return names
    }

    /// Computation order: embeddings, then blocks in order, then the final LayerNorm.
    public static func < (a: HookName, b: HookName) -> Bool {
        func key(_ h: HookName) -> (Int, Int, Int) {
            switch h.point {
            case .embed: (0, 0, 0)
            case .posEmbed: (0, 0, 1)
            case .lnFinalScale: (2, 0, 0)
            case .lnFinalNormalized: (2, 0, 1)
            default: (1, h.layer ?? 0, h.point.order)
            }
        }
        return key(a) < key(b)
    }
}

/// Selects hook names by TransformerLens name, short form, glob (`blocks.*.hook_resid_pre`,
/// `blocks.1*.attn.*`) or `all`.
public enum HookPattern {
    /// The hooks of a model with `nLayers` blocks that match any of `patterns`.
    /// Throws naming the first pattern that matches nothing.
    public static func resolve(_ patterns: [String], nLayers: Int) throws(GPT2Error) -> Set<HookName> {
        let all = HookName.all(nLayers: nLayers)
        var chosen = Set<HookName>()
        for pattern in patterns {
            if pattern == "all" { chosen.formUnion(all); continue }
            if let name = HookName(parsing: pattern) {
                guard name.layer.map({ $0 < nLayers }) ?? true else {
                    throw .layerOutOfRange(pattern, nLayers: nLayers)
                }
                chosen.insert(name)
                continue
            }
            let matches = all.filter { glob(pattern, matches: $0.description) }
            if matches.isEmpty { throw .unknownPattern(pattern) }
            chosen.formUnion(matches)
        }
        return chosen
    }

    /// Shell-style matching: `*` any run, `?` one character, everything else literal.
    public static func glob(_ pattern: String, matches text: String) -> Bool {
        let p = Array(pattern), t = Array(text)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count && (p[pi] == "?" || p[pi] == t[ti]) {
                pi += 1; ti += 1
            } else if pi < p.count && p[pi] == "*" {
                star = pi; mark = ti; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; ti = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}
