import Foundation
import GPT2

/// How well a model does a prompt set's task (DESIGN.md, "Task check"): a conclusion about an
/// estimator is only as good as the model's performance on the prompts it is measured on. The
/// metric is the logit difference `logit[answer] − logit[wrong]` at the last position; the gap of
/// a prompt is metric(clean) − metric(corrupt).
///
/// The model does the task when at least `minFractionCorrect` of the prompts have answer > wrong
/// and the mean |gap| is at least `minGap` (without corrupt prompts: the mean clean metric is).
/// Prompts whose |gap| is below `minGap` are named: patching leaves them out of its estimator
/// errors and normalised grids (dividing by a gap near 0 measures noise).
public struct TaskCheck: Sendable, Equatable, Codable {
    /// `--min-gap`'s default, in logits.
    public static let defaultMinGap = 0.5
    /// The share of prompts with answer > wrong below which the model does not do the task.
    public static let minFractionCorrect = 0.75

    /// Prompts with a clean metric.
    public var prompts: Int
    public var meanClean: Double
    /// Share of the prompts whose clean metric is > 0 (answer > wrong).
    public var fractionCorrect: Double
    /// Over the prompts with both metrics; nil when there is no corrupt run.
    public var meanAbsGap: Double?
    public var medianAbsGap: Double?
    public var minGap: Double
    /// Prompt indices whose |gap| is below `minGap`, ascending.
    public var smallGap: [Int]
    /// Each small-gap prompt's signed gap, in `smallGap` order.
    public var smallGapValues: [Double]

    enum CodingKeys: String, CodingKey {
        case prompts, meanClean = "mean_clean", fractionCorrect = "fraction_correct", meanAbsGap = "mean_abs_gap"
        case medianAbsGap = "median_abs_gap", minGap = "min_gap", smallGap = "small_gap_prompts"
        case smallGapValues = "small_gap_gaps", passed
    }

    /// From each prompt's clean metric and (where there is one) its corrupt metric.
    public init(clean: [Int: Double], corrupt: [Int: Double], minGap: Double) {
        let order = clean.keys.sorted()
        prompts = order.count
        meanClean = order.isEmpty ? .nan : order.reduce(0) { $0 + clean[$1]! } / Double(order.count)
        fractionCorrect = order.isEmpty ? .nan : Double(order.filter { clean[$0]! > 0 }.count) / Double(order.count)
        let paired = order.filter { corrupt[$0] != nil }
        let gaps = paired.map { clean[$0]! - corrupt[$0]! }
        if gaps.isEmpty {
            meanAbsGap = nil
            medianAbsGap = nil
        } else {
            let magnitudes = gaps.map(abs)
            meanAbsGap = magnitudes.reduce(0, +) / Double(magnitudes.count)
            medianAbsGap = Metrics.quantile(sorted: magnitudes.sorted(), 0.5)
        }
        self.minGap = minGap
        let small = zip(paired, gaps).filter { abs($0.1) < minGap }
        smallGap = small.map(\.0)
        smallGapValues = small.map(\.1)
    }

    /// Whether the model does the task; nil when no prompt was measured.
    public var passed: Bool? { prompts == 0 ? nil : failures.isEmpty }

    /// Why the model fails the check, e.g. "50 % correct, under 75 %"; empty when it passes.
    public var failures: [String] {
        guard prompts > 0 else { return [] }
        var out: [String] = []
        if !(fractionCorrect >= Self.minFractionCorrect) {
            out.append(String(format: "%.0f %% correct, under %.0f %%", fractionCorrect * 100, Self.minFractionCorrect * 100))
        }
        if let meanAbsGap {
            if !(meanAbsGap >= minGap) { out.append(String(format: "mean |clean − corrupt| %.3g, under --min-gap %g", meanAbsGap, minGap)) }
        } else if !(meanClean >= minGap) {
            out.append(String(format: "mean clean logit difference %.3g, under --min-gap %g", meanClean, minGap))
        }
        return out
    }

    /// One line: "task: mean logit difference 2.31, 96 % correct; |clean − corrupt| mean 2.1,
    /// median 1.9; 3 of 200 prompts below --min-gap 0.5 (7, 19, 44)". `names` bounds the
    /// prompt indices listed.
    public func line(names: Int = 12) -> String { "task: " + summary(names: names) }

    /// `line` without its "task: ".
    public func summary(names: Int = 12) -> String {
        guard prompts > 0 else { return "not measured (no prompt has a wrong answer)" }
        var s = String(format: "mean logit difference %.4g, %.0f %% correct (answer > wrong)", meanClean, fractionCorrect * 100)
        if let meanAbsGap, let medianAbsGap {
            s += String(format: "; |clean − corrupt| mean %.4g, median %.4g", meanAbsGap, medianAbsGap)
            s += "; \(smallGap.count) of \(prompts) prompts below --min-gap \(Self.format(minGap))"
            if !smallGap.isEmpty { s += " (" + Self.list(smallGap, names: names) + ")" }
        }
        return s
    }

    /// "0, 1, 2 … and 197 more".
    public static func list(_ indices: [Int], names: Int) -> String {
        let shown = indices.prefix(max(0, names)).map(String.init).joined(separator: ", ")
        return indices.count > names ? shown + " … and \(indices.count - names) more" : shown
    }

    static func format(_ x: Double) -> String { String(format: "%g", x) }

    /// The warning when the model does not do the task; nil when it does (or was not measured).
    public func warning(model: String) -> String? {
        guard passed == false else { return nil }
        return "\(model) does not do this task (\(failures.joined(separator: "; "))): conclusions drawn from this run measure noise"
    }

    public func encode(to encoder: Encoder) throws {
        func finite(_ x: Double?) -> Double? { x.flatMap { $0.isFinite ? $0 : nil } }
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(prompts, forKey: .prompts)
        try c.encode(finite(meanClean), forKey: .meanClean)
        try c.encode(finite(fractionCorrect), forKey: .fractionCorrect)
        try c.encode(finite(meanAbsGap), forKey: .meanAbsGap)
        try c.encode(finite(medianAbsGap), forKey: .medianAbsGap)
        try c.encode(minGap, forKey: .minGap)
        try c.encode(smallGap, forKey: .smallGap)
        try c.encode(smallGapValues, forKey: .smallGapValues)
        try c.encode(passed, forKey: .passed)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        prompts = try c.decode(Int.self, forKey: .prompts)
        meanClean = try c.decodeIfPresent(Double.self, forKey: .meanClean) ?? .nan
        fractionCorrect = try c.decodeIfPresent(Double.self, forKey: .fractionCorrect) ?? .nan
        meanAbsGap = try c.decodeIfPresent(Double.self, forKey: .meanAbsGap)
        medianAbsGap = try c.decodeIfPresent(Double.self, forKey: .medianAbsGap)
        minGap = try c.decode(Double.self, forKey: .minGap)
        smallGap = try c.decode([Int].self, forKey: .smallGap)
        smallGapValues = try c.decode([Double].self, forKey: .smallGapValues)
    }
}

/// The task check as rows of `summaries` (scope, key, metric, value): its one home, read by the
/// jobs that store it and by the report.
extension TaskCheck {
    /// `summaries.scope` of the aggregates (key `all`) and of the small-gap prompts (key: the
    /// prompt index, metric `gap`).
    public static let scope = "task", smallGapScope = "task_small_gap"

    public struct SummaryValue: Sendable, Equatable {
        public var scope: String, key: String, metric: String, value: Double
        public init(scope: String, key: String, metric: String, value: Double) {
            self.scope = scope
            self.key = key
            self.metric = metric
            self.value = value
        }
    }

    /// The rows a run stores; NaN (undefined) values are stored as NULL.
    public var summaryValues: [SummaryValue] {
        func row(_ metric: String, _ value: Double?) -> SummaryValue {
            SummaryValue(scope: Self.scope, key: "all", metric: metric, value: value ?? .nan)
        }
        var out = [
            row("prompts", Double(prompts)), row("mean_clean", meanClean), row("fraction_correct", fractionCorrect),
            row("mean_abs_gap", meanAbsGap), row("median_abs_gap", medianAbsGap), row("min_gap", minGap),
            row("n_small_gap", Double(smallGap.count)), row("passed", passed.map { $0 ? 1 : 0 }),
        ]
        out += zip(smallGap, smallGapValues).map { SummaryValue(scope: Self.smallGapScope, key: "\($0)", metric: "gap", value: $1) }
        return out
    }

    /// The task check stored as `summaryValues`; nil when the rows are not there.
    public init?(summaryValues rows: [SummaryValue]) {
        var all: [String: Double] = [:]
        var small: [(Int, Double)] = []
        for r in rows {
            if r.scope == Self.scope && r.key == "all" { all[r.metric] = r.value }
            if r.scope == Self.smallGapScope, r.metric == "gap", let i = Int(r.key) { small.append((i, r.value)) }
        }
        guard let n = all["prompts"], let minGap = all["min_gap"] else { return nil }
        func value(_ k: String) -> Double? { all[k].flatMap { $0.isNaN ? nil : $0 } }
        prompts = Int(n)
        meanClean = all["mean_clean"] ?? .nan
        fractionCorrect = all["fraction_correct"] ?? .nan
        meanAbsGap = value("mean_abs_gap")
        medianAbsGap = value("median_abs_gap")
        self.minGap = minGap
        small.sort { $0.0 < $1.0 }
        smallGap = small.map(\.0)
        smallGapValues = small.map(\.1)
    }
}

/// The task metric `logit[answer] − logit[wrong]` of one prompt, from the final LayerNorm's
/// output x at the last position: `x · (W_U[:, answer] − W_U[:, wrong]) + b_U[answer] − b_U[wrong]`
/// (no logits over the vocabulary are computed). Shared by `dla` and `patch`.
public struct LogitDifference: Sendable {
    /// `W_U[:, answer] − W_U[:, wrong]`, (C).
    public let u: [Float]
    /// `b_U[answer] − b_U[wrong]`.
    public let bias: Double

    public init(model: GPT2Model, answer: Int, wrong: Int) {
        let w = model.parameters, C = model.config.dModel
        u = (0..<C).map { w.wU[answer * C + $0] - w.wU[wrong * C + $0] }
        bias = Double(w.bU[answer]) - Double(w.bU[wrong])
    }

    /// The metric of the final LayerNorm output `x` (C).
    public func callAsFunction(_ x: [Float]) -> Double {
        var s = bias
        for c in 0..<u.count { s += Double(x[c]) * Double(u[c]) }
        return s
    }

    /// The logit difference of each prompt of a batch run by `pass` (last position).
    public static func values(model: GPT2Model, pass: ForwardPass, answer: [Int], wrong: [Int]) -> [Double] {
        model.finalAtLastPosition(pass).enumerated().map { b, x in LogitDifference(model: model, answer: answer[b], wrong: wrong[b])(x) }
    }
}

/// The first position at which the clean and corrupted prompts differ (their length when they
/// are equal): every activation before it is the same in both runs, so a patch there changes
/// nothing by construction.
public func firstDifferingPosition(_ clean: [Int], _ corrupt: [Int]) -> Int {
    let n = min(clean.count, corrupt.count)
    return (0..<n).first { clean[$0] != corrupt[$0] } ?? n
}
