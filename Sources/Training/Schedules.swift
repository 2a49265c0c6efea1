import Foundation

/// The learning rate per step: linear warm-up from 0, then a half cosine from `peak` down to
/// `floor` at `totalSteps` — Hugging Face's `cosine_with_min_lr` (`min_lr`), which the paper's
/// fine-tuning uses. Step s (0-based) is the (s + 1)-th optimizer step; with a warm-up the
/// first step's rate is 0, as in transformers.
public struct LearningRateSchedule: Sendable, Equatable, Codable {
    public var peak: Double
    public var floor: Double
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Double, floor: Double, warmupSteps: Int, totalSteps: Int) {
        self.peak = peak
        self.floor = floor
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    public func rate(at step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step) / Double(max(1, warmupSteps)) }
        let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        let minRate = peak > 0 ? floor / peak : 0
        let factor = 0.5 * (1 + cos(.pi * 2 * 0.5 * progress)) * (1 - minRate) + minRate
        return peak * max(0, factor)
    }
}

/// One LayerNorm, or one path of `ln_1`, that the paper's procedure replaces.
public enum RemovablePath: Hashable, Sendable, Codable {
    case ln2(block: Int)
    case ln1QK(block: Int)
    case ln1V(block: Int)
    case lnFinal

    /// The checkpoint's name of the LayerNorm with the path (`h.3.ln_1.qk`).
    public var name: String {
        switch self {
        case let .ln2(b): "h.\(b).ln_2"
        case let .ln1QK(b): "h.\(b).ln_1.qk"
        case let .ln1V(b): "h.\(b).ln_1.v"
        case .lnFinal: "ln_f"
        }
    }

    /// The event text stored with the step (`TrainingFigures` groups by the text before " of ").
    public var event: String {
        switch self {
        case let .ln2(b): "ln_2 of block \(b) removed"
        case let .ln1QK(b): "ln_1 (Q/K) of block \(b) removed"
        case let .ln1V(b): "ln_1 (V) of block \(b) removed"
        case .lnFinal: "ln_f removed"
        }
    }
}

/// When each LayerNorm turns fake, as the paper's companion code schedules it (`config.py`,
/// `make_gpt2_standard`; `train.py`, `LNRemover`): block i's `ln_2` at `ln2Start + ln2Gap·i`, then
/// `ln_1` on the Q/K path from `ln1QKStart = ln2Start + n·ln2Gap` every `ln1QKGap` steps, then its V
/// path from `ln1VStart = ln1QKStart + n·ln1QKGap` every `ln1VGap`, then `ln_f` at
/// `lnFinalStep = ln1VStart + n·ln1VGap`. For GPT-2 small (n = 12): 20 + 2i, 44 + 2i, 68 + 3i, 104.
/// A gap of 0 removes a kind in all blocks at once. Every number can be set.
public struct RemovalSchedule: Sendable, Equatable, Codable {
    public var nLayers: Int
    public var ln2Start: Int
    public var ln2Gap: Int
    public var ln1QKStart: Int
    public var ln1QKGap: Int
    public var ln1VStart: Int
    public var ln1VGap: Int
    public var lnFinalStep: Int

    /// The paper's schedule scaled to `nLayers`, with optional overrides.
    public init(nLayers: Int, ln2Start: Int = 20, ln2Gap: Int = 2, ln1QKStart: Int? = nil, ln1QKGap: Int = 2,
                ln1VStart: Int? = nil, ln1VGap: Int = 3, lnFinalStep: Int? = nil) {
        self.nLayers = nLayers
        self.ln2Start = ln2Start
        self.ln2Gap = ln2Gap
        self.ln1QKGap = ln1QKGap
        self.ln1VGap = ln1VGap
        let qk = ln1QKStart ?? ln2Start + nLayers * ln2Gap
        self.ln1QKStart = qk
        let v = ln1VStart ?? qk + nLayers * ln1QKGap
        self.ln1VStart = v
        self.lnFinalStep = lnFinalStep ?? v + nLayers * ln1VGap
    }

    /// Every removal with its step, in the order they happen (ties in the order ln_2, ln_1 Q/K, ln_1 V, ln_f).
    public var events: [(step: Int, path: RemovablePath)] {
        var out: [(Int, RemovablePath)] = []
        for i in 0..<nLayers {
            out.append((ln2Start + ln2Gap * i, .ln2(block: i)))
            out.append((ln1QKStart + ln1QKGap * i, .ln1QK(block: i)))
            out.append((ln1VStart + ln1VGap * i, .ln1V(block: i)))
        }
        out.append((lnFinalStep, .lnFinal))
        func rank(_ p: RemovablePath) -> Int {
            switch p { case .ln2: 0; case .ln1QK: 1; case .ln1V: 2; case .lnFinal: 3 }
        }
        return out.enumerated().sorted {
            ($0.element.0, rank($0.element.1), $0.offset) < ($1.element.0, rank($1.element.1), $1.offset)
        }.map { $0.element }
    }

    /// The step of the last removal.
    public var lastStep: Int { events.map(\.step).max() ?? 0 }

    /// Whether `path` is fake during step `step` (removals happen as a step begins).
    public func isRemoved(_ path: RemovablePath, at step: Int) -> Bool {
        switch path {
        case let .ln2(b): step >= ln2Start + ln2Gap * b
        case let .ln1QK(b): step >= ln1QKStart + ln1QKGap * b
        case let .ln1V(b): step >= ln1VStart + ln1VGap * b
        case .lnFinal: step >= lnFinalStep
        }
    }
}
