import Analysis
import Foundation
import Jobs
import ResultsStore

/// The task check of a `dla` or `patch` run as a short note for its figures (DESIGN.md, "Task
/// check"): a figure of a run whose model does not do the task says so beside it.
enum TaskNote {
    /// The run's task check (`StoredRuns.taskCheck`).
    static func check(db: ResultsDatabase, run: RunRecord) throws -> TaskCheck? { try StoredRuns.taskCheck(db: db, run: run) }

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
