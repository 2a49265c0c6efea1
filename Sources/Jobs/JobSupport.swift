import Foundation
import ResultsStore

/// Thrown by a job's `progress` callback to stop after the chunk just stored: the run is marked
/// `interrupted` and can be resumed.
public struct JobStop: Error {
    public init() {}
}

/// Refreshes a run's heartbeat every `interval` seconds while a job works on it, so that another
/// host can tell a live writer from a dead one (`ResultsDatabase.claimRun`).
final class Heartbeat: @unchecked Sendable {
    private let timer: DispatchSourceTimer

    init(db: ResultsDatabase, runID: Int64, interval: TimeInterval = 30) {
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "lnlens.heartbeat"))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { try? db.heartbeat(runID: runID) }
        timer.resume()
    }

    func stop() { timer.cancel() }
}
