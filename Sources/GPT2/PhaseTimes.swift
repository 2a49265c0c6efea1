import Foundation

/// Seconds spent per phase of a pass, for profiling with the real kernels.
public final class PhaseTimes: @unchecked Sendable {
    public private(set) var seconds: [String: Double] = [:]
    private var mark = DispatchTime.now().uptimeNanoseconds
    public init() {}
    /// Starts timing the next phase.
    public func start() { mark = DispatchTime.now().uptimeNanoseconds }
    /// Adds the time since the last mark to `phase`.
    public func lap(_ phase: String) {
        let now = DispatchTime.now().uptimeNanoseconds
        seconds[phase, default: 0] += Double(now - mark) * 1e-9
        mark = now
    }
}
