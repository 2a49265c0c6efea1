import Analysis
import Foundation
import ResultsStore

/// The task check of a `dla` or `patch` run as a short note for its figures (DESIGN.md, "Task
/// check"): a figure of a run whose model does not do the task says so beside it.
enum TaskNote {
    /// The run's task check: stored in its summaries, else (unfinished runs, runs stored before
    /// lnlens measured it) computed from its `metric` rows with its `min_gap` option. nil when
    /// it has none (text input, prompts without `wrong`).
    static func check(db: ResultsDatabase, run: RunRecord) throws -> TaskCheck? {
        let stored = try db.summaries(runID: run.id!).map {
            TaskCheck.SummaryValue(scope: $0.scope, key: $0.key, metric: $0.metric, value: $0.value)
        }
        if let check = TaskCheck(summaryValues: stored) { return check }
        var clean: [Int: Double] = [:], corrupt: [Int: Double] = [:]
        for r in try db.results(runID: run.id!, site: StoreName.metricSite) {
            if r.quantity == StoreName.clean { clean[r.promptIndex] = r.value }
            if r.quantity == StoreName.corrupt { corrupt[r.promptIndex] = r.value }
        }
        guard !clean.isEmpty else { return nil }
        let options = (try? JSONSerialization.jsonObject(with: Data(run.optionsJSON.utf8))) as? [String: Any]
        let minGap = (options?["min_gap"] as? NSNumber)?.doubleValue ?? (options?["min_gap"] as? String).flatMap(Double.init)
        return TaskCheck(clean: clean, corrupt: corrupt, minGap: minGap ?? TaskCheck.defaultMinGap)
    }

    /// "task: 96 % correct, mean |clean − corrupt| 2.1" or "task check failed: 50 % correct
    /// (< 75 %), …: conclusions measure noise"; nil without a task check.
    static func note(_ check: TaskCheck?) -> String? {
        guard let check, check.prompts > 0 else { return nil }
        if check.passed == false { return "task check failed: " + check.failures.joined(separator: "; ") + ": conclusions measure noise" }
        var s = String(format: "task: %.0f %% correct, mean logit difference %.3g", check.fractionCorrect * 100, check.meanClean)
        if let gap = check.meanAbsGap { s += String(format: ", mean |clean − corrupt| %.3g", gap) }
        if !check.smallGap.isEmpty { s += " (\(check.smallGap.count) prompts below min gap \(String(format: "%g", check.minGap)) left out)" }
        return s
    }
}
