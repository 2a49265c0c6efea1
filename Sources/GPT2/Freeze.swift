import Foundation
import TensorCore

/// The nonlinearities a linearised variant of the model holds fixed at a base pass's values
/// (`patch --freeze`): the attention patterns (attention becomes linear in the values), GELU
/// (replaced by its tangent at the base pass's pre-activations), the LayerNorm scales (1/σ as DLA
/// fixes it). On the base pass itself every frozen value is its own, so its forward is unchanged;
/// what changes is its backward (no gradient through the softmax or σ) and any other rows run
/// against it (the patched rows of activation patching).
public struct Freeze: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let attention = Freeze(rawValue: 1)
    public static let mlp = Freeze(rawValue: 2)
    public static let ln = Freeze(rawValue: 4)
    public static let all: Freeze = [.attention, .mlp, .ln]

    /// `patch --decompose`: the model, each part frozen alone, all of them.
    public static let decomposition: [Freeze] = [[], .attention, .mlp, .ln, .all]

    /// The parts by name, in this order.
    public static let named: [(name: String, part: Freeze)] = [("attention", .attention), ("mlp", .mlp), ("ln", .ln)]

    /// `none`, `all`, or the parts comma-separated in the order of `named` (`attention,ln`).
    public var name: String {
        if isEmpty { return "none" }
        if self == .all { return "all" }
        return Self.named.filter { contains($0.part) }.map(\.name).joined(separator: ",")
    }

    /// Parses `attention`, `mlp`, `ln`, `all`, `none` and comma-separated combinations; nil for an
    /// unknown part or an empty text.
    public init?(name text: String) {
        var parts: Freeze = []
        for word in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            switch word {
            case "all": parts.formUnion(.all)
            case "none": break
            default:
                guard let part = Self.named.first(where: { $0.name == word })?.part else { return nil }
                parts.formUnion(part)
            }
        }
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
        self = parts
    }
}

/// The frozen values rows read: those of `base`, row i of the rows at row `sourceRows[i]`
/// (b · T + t) of the base pass (a retained pass: every block's activations kept).
struct FrozenValues {
    let parts: Freeze
    let base: ForwardPass
    let sourceRows: [Int]

    /// The base pass's pattern row of head h for each segment's rows, written over the segment's
    /// scores `(NH, rows, keys)` (keys = the positions 0 ..< T of the prompt).
    func pattern(layer l: Int, into att: FloatPointer, segments: [AttentionSegment], NH: Int) {
        let T = base.T, frozen = base.block(l).att
        for s in segments {
            let b = sourceRows[s.row] / T
            for h in 0..<NH {
                for i in 0..<s.rows {
                    let from = frozen + ((b * NH + h) * T + s.start + i) * T
                    (att + s.att + (h * s.rows + i) * s.keys).update(from: from, count: s.keys)
                }
            }
        }
    }

    /// The base pass's pre-activations of block l's MLP at the rows, `(N, M)`.
    func mlpPre(layer l: Int, M: Int) -> [Float] {
        let pre = base.block(l).mlpPre
        var x0 = [Float](repeating: 0, count: sourceRows.count * M)
        x0.withUnsafeMutableBufferPointer { out in
            for (i, n) in sourceRows.enumerated() { (out.baseAddress! + i * M).update(from: pre + n * M, count: M) }
        }
        return x0
    }

    /// Writes the base pass's LayerNorm scale (`hook_scale`, from `frozen`: one float per base row)
    /// over `scale (N)`.
    func scale(_ frozen: FloatPointer, into scale: FloatPointer) {
        for (i, n) in sourceRows.enumerated() { scale[i] = frozen[n] }
    }
}
