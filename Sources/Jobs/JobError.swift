import Foundation

/// What stops a job or a reading of its stored runs: one line each, naming the run, what was
/// wrong and what to do. A stopped or refused run names its own job's unit and resume (`--resume
/// RUN_ID` for `dla`, `patch` and `eval`; the same options and `--resume` for `train` and
/// `remove-ln`, whose run continues from the checkpoints in `--out`).
public enum JobError: LocalizedError, Equatable {
    case diffRefused(runA: Int64, runB: Int64, reason: String)
    case wrongCommand(runID: Int64, command: String, expected: String, what: String)
    /// A run stopped by the user (Ctrl-C) after storing `done` of `total` `unit`; `resume` is how
    /// to continue it ("--resume 3", or training's "the same options and --resume").
    case interrupted(runID: Int64, done: Int, total: Int, unit: String, resume: String)
    /// `--resume RUN_ID` of a run that is not this computation.
    case resumeMismatch(runID: Int64, reason: String)
    /// `train`/`remove-ln --resume` of a training in `directory` that another value of `option` made.
    case trainingMismatch(directory: String, option: String, stored: String, now: String)
    /// `train`/`remove-ln --out` names a folder that exists (without --force or --resume).
    case outputExists(path: String)
    /// `train`/`remove-ln --resume` names an `--out` that does not exist.
    case nothingToResume(path: String)
    /// `--atp-star-bound` with what it cannot run with (`reason` says what to change).
    case atpStarBound(reason: String)

    public var errorDescription: String? {
        switch self {
        case let .diffRefused(a, b, reason):
            "cannot diff runs \(a) and \(b): \(reason)"
        case let .wrongCommand(id, command, expected, what):
            "run \(id) is a \(command) run; \(what) needs a \(expected) run (see `lnlens runs`)"
        case let .interrupted(id, done, total, unit, resume):
            "run \(id) interrupted with \(done) of \(total) \(unit) stored; continue it by repeating the command with \(resume)"
        case let .resumeMismatch(id, reason):
            "cannot resume run \(id): \(reason); resume with the options it was started with, or start a new run"
        case let .trainingMismatch(directory, option, stored, now):
            "\(directory): the checkpoint was made with \(option) \(stored) but this invocation has \(now); resume with the same options"
        case let .outputExists(path):
            "--out \(path) already exists; pass --force to replace it, or --resume to continue the training in it"
        case let .nothingToResume(path):
            "--resume: \(path) does not exist; run without --resume to start a training there"
        case let .atpStarBound(reason):
            "--atp-star-bound: \(reason)"
        }
    }
}
