import Foundation
import TensorCore

/// Dropout probabilities at GPT-2's three sites, under transformers' `config.json` names:
/// `embd_pdrop` on wte + wpe, `attn_pdrop` on the attention probabilities, `resid_pdrop` on the
/// attention's output projection and on the MLP's output.
public struct DropoutRates: Sendable, Equatable, Codable {
    public var embd: Double
    public var attn: Double
    public var resid: Double

    public init(embd: Double = 0, attn: Double = 0, resid: Double = 0) {
        (self.embd, self.attn, self.resid) = (embd, attn, resid)
    }

    /// No dropout anywhere.
    public static let none = DropoutRates()
    public var isZero: Bool { embd == 0 && attn == 0 && resid == 0 }

    /// transformers' `GPT2Config` defaults (0.1 each), what a `config.json` without the keys means.
    public static let transformersDefault = DropoutRates(embd: 0.1, attn: 0.1, resid: 0.1)

    enum CodingKeys: String, CodingKey { case embd = "embd_pdrop", attn = "attn_pdrop", resid = "resid_pdrop" }

    /// The rates a checkpoint's `config.json` sets (transformers' default 0.1 for a missing key).
    public init(configAt url: URL) throws {
        let c = try JSONDecoder().decode(Keys.self, from: Data(contentsOf: url))
        self.init(embd: c.embd ?? 0.1, attn: c.attn ?? 0.1, resid: c.resid ?? 0.1)
    }

    private struct Keys: Decodable {
        let embd: Double?, attn: Double?, resid: Double?
        enum CodingKeys: String, CodingKey { case embd = "embd_pdrop", attn = "attn_pdrop", resid = "resid_pdrop" }
    }
}

/// Where a dropout mask applies; the raw value enters the mask's key.
public enum DropoutSite: UInt64, Sendable {
    /// `embd_pdrop` on wte + wpe (block 0's resid_pre), layer 0.
    case embedding = 1
    /// `attn_pdrop` on block l's attention pattern, after the softmax.
    case attention = 2
    /// `resid_pdrop` on block l's attn_out (after W_O and b_O).
    case attentionOutput = 3
    /// `resid_pdrop` on block l's mlp_out.
    case mlpOutput = 4
}

/// The dropout of one training micro-batch's forward and backward. Every mask is a pure function
/// of (seed, optimizer step, micro-batch index within the step, site, layer, element index):
/// `DropoutMask` with key `DropoutMask.key([seed ^ "dropout", step, microBatch, site, layer])`,
/// the element index running over the site's tensor of the micro-batch in row-major order
/// (`(B·T, C)` for the residual sites, `(B, NH, T, T)` for the pattern). A resumed run, and any
/// process given the same numbers, draws the same masks.
public struct Dropout: Sendable, Equatable {
    public var rates: DropoutRates
    public var seed: UInt64
    public var step: Int
    public var microBatch: Int

    public init(rates: DropoutRates, seed: UInt64, step: Int, microBatch: Int) {
        (self.rates, self.seed, self.step, self.microBatch) = (rates, seed, step, microBatch)
    }

    /// "dropout" in ASCII: the seed's dropout stream differs from its other uses.
    static let domain: UInt64 = 0x0064_726F_706F_7574

    /// The mask at `site` of block `layer`; nil where that site's probability is 0.
    public func mask(_ site: DropoutSite, layer: Int = 0) -> DropoutMask? {
        let p = switch site {
        case .embedding: rates.embd
        case .attention: rates.attn
        case .attentionOutput, .mlpOutput: rates.resid
        }
        guard p > 0 else { return nil }
        let key = DropoutMask.key([seed ^ Self.domain, UInt64(step), UInt64(microBatch), site.rawValue, UInt64(layer)])
        return DropoutMask(key: key, probability: p)
    }
}
