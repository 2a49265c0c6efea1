/// A component of the final residual stream (DESIGN.md, "Definitions"): the one place where
/// component names (`L3H2`, `L3_bO`, `L3_mlp`) are made and parsed, and mapped to the sites the
/// results store keys rows by (`result` layer 3 head 2, `b_O` layer 3, `mlp_out` layer 3).
/// Encoded as its name (`"L3H2"`), as prompt fixtures and `--json` rows write it.
public enum Component: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    case embed
    case posEmbed
    /// Head h of layer l: its `z · W_O` (`blocks.l.attn.hook_result`, b_O excluded).
    case head(layer: Int, head: Int)
    /// Layer l's attention output bias.
    case bO(layer: Int)
    /// Layer l's MLP output.
    case mlp(layer: Int)
    /// The final residual stream itself (only for the decomposition check).
    case residPost

    /// Every component of a model, in the order DLA rows are produced.
    public static func all(nLayers: Int, nHeads: Int) -> [Component] {
        var out: [Component] = [.embed, .posEmbed]
        for l in 0..<nLayers {
            for h in 0..<nHeads { out.append(.head(layer: l, head: h)) }
            out.append(.bO(layer: l))
            out.append(.mlp(layer: l))
        }
        return out
    }

    /// `embed`, `pos_embed`, `L3H2`, `L3_bO`, `L3_mlp`, `resid_post`.
    public var description: String {
        switch self {
        case .embed: "embed"
        case .posEmbed: "pos_embed"
        case let .head(l, h): "L\(l)H\(h)"
        case let .bO(l): "L\(l)_bO"
        case let .mlp(l): "L\(l)_mlp"
        case .residPost: "resid_post"
        }
    }

    /// Parses a name as `description` writes it; nil for anything else.
    public init?(name: String) {
        switch name {
        case "embed": self = .embed
        case "pos_embed": self = .posEmbed
        case "resid_post": self = .residPost
        default:
            guard name.first == "L" else { return nil }
            let body = name.dropFirst(), number = Component.number
            if let h = body.firstIndex(of: "H"), let l = number(body[..<h]), let head = number(body[body.index(after: h)...]) {
                self = .head(layer: l, head: head)
            } else if body.hasSuffix("_bO"), let l = number(body.dropLast(3)) {
                self = .bO(layer: l)
            } else if body.hasSuffix("_mlp"), let l = number(body.dropLast(4)) {
                self = .mlp(layer: l)
            } else {
                return nil
            }
        }
    }

    /// The site, layer and head under which the store keys this component's rows.
    public var site: (name: String, layer: Int?, head: Int?) {
        switch self {
        case .embed: ("embed", nil, nil)
        case .posEmbed: ("pos_embed", nil, nil)
        case let .head(l, h): ("result", l, h)
        case let .bO(l): ("b_O", l, nil)
        case let .mlp(l): ("mlp_out", l, nil)
        case .residPost: ("resid_post", nil, nil)
        }
    }

    /// The component stored under a site, layer and head; nil for other sites.
    public init?(site: String, layer: Int?, head: Int?) {
        switch (site, layer, head) {
        case ("embed", nil, nil): self = .embed
        case ("pos_embed", nil, nil): self = .posEmbed
        case ("resid_post", nil, nil): self = .residPost
        case let ("result", l?, h?): self = .head(layer: l, head: h)
        case let ("b_O", l?, nil): self = .bO(layer: l)
        case let ("mlp_out", l?, nil): self = .mlp(layer: l)
        default: return nil
        }
    }

    public init(from decoder: Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let c = Component(name: name) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "'\(name)' is not a component (embed, pos_embed, L3H2, L3_bO, L3_mlp, resid_post)"))
        }
        self = c
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    /// The layer of a head; nil for other components.
    public var headLayer: Int? {
        if case let .head(l, _) = self { return l }
        return nil
    }

    /// Digits only (no sign, no spaces), as `description` writes a layer or head.
    fileprivate static func number(_ s: Substring) -> Int? {
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(s)
    }

    /// Production order: embeddings, then per layer its heads, b_O, MLP; the check last.
    public static func < (a: Component, b: Component) -> Bool {
        func key(_ c: Component) -> (Int, Int, Int) {
            switch c {
            case .embed: (0, 0, 0)
            case .posEmbed: (0, 0, 1)
            case let .head(l, h): (1, l, h)
            case let .bO(l): (1, l, 1 << 20)
            case let .mlp(l): (1, l, 1 << 21)
            case .residPost: (2, 0, 0)
            }
        }
        return key(a) < key(b)
    }
}

/// The heads an NMAE over heads is taken over: all of them, one layer's, or one head. Its
/// `description` is the key the store's `summaries` rows carry (`all`, `L3`, `L3H2`).
public enum HeadSet: Hashable, Sendable, CustomStringConvertible {
    case all
    case layer(Int)
    case head(layer: Int, head: Int)

    public var description: String {
        switch self {
        case .all: "all"
        case let .layer(l): "L\(l)"
        case let .head(l, h): Component.head(layer: l, head: h).description
        }
    }

    /// Parses a key as `description` writes it; nil for anything else.
    public init?(key: String) {
        if key == "all" {
            self = .all
        } else if key.first == "L", let l = Component.number(key.dropFirst()) {
            self = .layer(l)
        } else if case let .head(l, h)? = Component(name: key) {
            self = .head(layer: l, head: h)
        } else {
            return nil
        }
    }

    /// The head, as a component; nil for the other sets.
    public var component: Component? {
        if case let .head(l, h) = self { return .head(layer: l, head: h) }
        return nil
    }
}
