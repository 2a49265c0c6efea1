import Foundation
import Support

/// The "greater-than" task of Hanna, Liu & Variengien 2023 ("How does GPT-2 compute
/// greater-than?", arXiv 2305.00586): "The war lasted from the year 1732 to the year 17" — the
/// model should continue with a two-digit year token above 32.
///
/// Hanna et al. score with the probability mass above vs. at-or-below the start year; a prompt
/// file has one answer and one wrong token, so here each prompt gets (drawn from the seed):
/// `answer` a two-digit token YY' with YY < YY' ≤ 99, `wrong` one with 00 ≤ YY' < YY. `corrupt`
/// is their "01" baseline: the start year replaced by XX01 ("from the year 1701"), which leaves
/// the token count unchanged. Only centuries 11–17 (as in the paper) are used, and only years
/// that the tokenizer splits as [" XX", "YY"] (e.g. " 1732" → " 17", "32"); start years YY run
/// from 02 to 98 so both an answer and a wrong token exist. Extra key `year`: the start year.
public struct GreaterThanGenerator: Sendable {
    /// Nouns of events with a duration, in the spirit of the paper's list.
    public static let nouns = [
        "war", "siege", "drought", "strike", "expedition", "reign", "campaign", "trial", "famine",
        "epidemic", "occupation", "journey", "festival", "conflict", "blockade", "embargo", "crisis",
        "construction", "rebellion", "dynasty",
    ]
    public static let centuries = Array(11...17)

    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    public static func prompt(noun: String, century: Int, year: Int) -> String {
        "The \(noun) lasted from the year \(century)\(twoDigits(year)) to the year \(century)"
    }

    public func generate(n: Int, tokenizer: some TextEncoder) throws -> [PromptRecord] {
        guard n > 0 else { throw AnalysisError.generationCountInvalid(n: n) }
        // Two-digit tokens "00"…"99" (no leading space: they follow " 17" directly).
        var yearToken: [Int: Int] = [:]
        for yy in 0...99 {
            let ids = tokenizer.encode(Self.twoDigits(yy))
            if ids.count == 1 { yearToken[yy] = ids[0] }
        }
        // (century, yy) pairs whose " XXYY" splits as [" XX", "YY"].
        func splits(_ century: Int, _ yy: Int) -> Bool {
            let head = tokenizer.encode(" \(century)")
            guard head.count == 1, let tail = yearToken[yy] else { return false }
            return tokenizer.encode(" \(century)\(Self.twoDigits(yy))") == [head[0], tail]
        }
        var starts: [(century: Int, yy: Int)] = []
        for century in Self.centuries where splits(century, 1) {
            for yy in 2...98 where splits(century, yy) {
                let above = (yy + 1...99).contains { yearToken[$0] != nil }
                let below = (0..<yy).contains { yearToken[$0] != nil }
                if above && below { starts.append((century, yy)) }
            }
        }
        guard !starts.isEmpty else {
            throw AnalysisError.tooFewSingleTokenWords(
                task: "greater-than", kind: "years", found: 0, needed: 1)
        }

        var rng = SplitMix64(seed: seed)
        var records: [PromptRecord] = []
        records.reserveCapacity(n)
        for _ in 0..<n {
            let noun = rng.pick(Self.nouns)
            let (century, yy) = rng.pick(starts)
            let above = (yy + 1...99).filter { yearToken[$0] != nil }
            let below = (0..<yy).filter { yearToken[$0] != nil }
            let answer = rng.pick(above)
            let wrong = rng.pick(below)
            records.append(
                PromptRecord(
                    prompt: Self.prompt(noun: noun, century: century, year: yy),
                    answer: Self.twoDigits(answer),
                    wrong: Self.twoDigits(wrong),
                    corrupt: Self.prompt(noun: noun, century: century, year: 1),
                    extra: ["year": century * 100 + yy]))
        }
        return records
    }

    static func twoDigits(_ yy: Int) -> String { yy < 10 ? "0\(yy)" : "\(yy)" }
}
