import Foundation
import Jobs
#if canImport(Glibc)
import Glibc
#endif

/// The one progress line of long jobs (`dla`, `patch`, `train`, `remove-ln`, `eval`):
/// `label [bar] done/total unit  rate  ETA  detail` on stderr, redrawn in place, where
/// `detail` is what the job wants seen (training: the loss). Drawn only when stderr is a
/// terminal, once the job has run for a second (quick jobs stay quiet), at most ten times a
/// second and cut to the terminal's width; `finish` clears it. `phase` names a last step that
/// counts nothing (summaries, reading the runs back), so a long one is not a silent full bar.
/// When stderr is not a terminal nothing at all is written, so logs and pipes get only the
/// command's own output.
///
///     let progress = ProgressLine(label: spec, unit: "prompts")
///     defer { progress.finish() }
///     progress.update(done: done, total: total)                          // dla, patch, eval
///     progress.update(done: step, total: steps, detail: "loss 3.1006")  // train, remove-ln
final class ProgressLine {
    let label: String
    let unit: String
    let enabled: Bool
    private let clock: () -> TimeInterval
    private let start: TimeInterval
    /// First `done` seen and when: the rate counts work of this process only (a resumed run
    /// starts with work already done).
    private var baseline: (done: Int, time: TimeInterval)?
    private var lastDraw: TimeInterval = -.infinity
    /// The last count reported (`phase` shows it).
    private var last: (done: Int, total: Int)?
    private(set) var shown = false
    /// Where the line goes (stderr; tests capture it).
    private let write: (String) -> Void

    init(label: String, unit: String, enabled: Bool = isatty(2) != 0,
         clock: @escaping () -> TimeInterval = { ProcessInfo.processInfo.systemUptime },
         write: @escaping (String) -> Void = { printErr($0, terminator: "") }) {
        self.label = label
        self.unit = unit
        self.enabled = enabled
        self.clock = clock
        self.write = write
        start = clock()
    }

    /// Reports `done` of `total` units; `detail` is appended as is.
    func update(done: Int, total: Int, detail: String? = nil) {
        guard enabled else { return }
        last = (done, total)
        let now = clock()
        if baseline == nil { baseline = (done, now) }
        let finished = done >= total
        guard now - start >= 1, finished || now - lastDraw >= 0.1 else { return }
        lastDraw = now
        var rate: Double?
        if let baseline, now > baseline.time, done > baseline.done {
            rate = Double(done - baseline.done) / (now - baseline.time)
        }
        let line = Self.text(label: label, unit: unit, done: done, total: total, rate: rate, detail: detail,
                             width: Self.terminalWidth())
        write("\r" + line + "\u{1B}[K")
        shown = true
    }

    /// Shows `text` as what the job does now, after the count it reached (the bar stays where
    /// it was), at once: a step that counts nothing may take long.
    func phase(_ text: String) {
        guard enabled else { return }
        let line = last.map { Self.text(label: label, unit: unit, done: $0.done, total: $0.total, rate: nil, detail: text,
                                        width: Self.terminalWidth()) }
            ?? Self.cut("\(label) \(text)", width: Self.terminalWidth())
        write("\r" + line + "\u{1B}[K")
        shown = true
    }

    /// Runs a job stored in chunks with a progress line: `body` hands the job the per-chunk
    /// callback, which redraws the line and, after Ctrl-C, stops the job (`JobStop`) once the
    /// chunk being stored is in, and the callback that names its last step (`phase`).
    static func run<T>(label: String, unit: String,
                       _ body: (_ chunkDone: (Int, Int) throws -> Void, _ phase: (String) -> Void) throws -> T) throws -> T {
        let progress = ProgressLine(label: label, unit: unit)
        Interrupt.install()
        defer { progress.finish() }
        return try body({ done, total in
            progress.update(done: done, total: total)
            if Interrupt.requested { throw JobStop() }
        }, { progress.phase($0) })
    }

    /// Clears the line (if one was drawn).
    func finish() {
        if shown { write("\r\u{1B}[K") }
        shown = false
    }

    /// The line's text, at most `width − 1` characters (a full-width line would wrap on some
    /// terminals and break the redraw).
    static func text(label: String, unit: String, done: Int, total: Int, rate: Double?, detail: String?,
                     width: Int) -> String {
        let slots = 20
        let filled = total > 0 ? min(slots, slots * max(0, done) / total) : 0
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: slots - filled)
        var parts = ["\(label) \(bar) \(done)/\(total) \(unit)"]
        if let rate, rate > 0 {
            parts.append(rateText(rate) + " \(unit)/s")
            if done < total { parts.append("ETA " + duration(Double(total - done) / rate)) }
        }
        if let detail, !detail.isEmpty { parts.append(detail) }
        return cut(parts.joined(separator: "  "), width: width)
    }

    /// `line` cut to `width − 1` characters, ending in … when cut.
    static func cut(_ line: String, width: Int) -> String {
        let limit = max(10, width - 1)
        return line.count <= limit ? line : String(line.prefix(limit - 1)) + "…"
    }

    static func rateText(_ rate: Double) -> String {
        rate >= 100 ? String(format: "%.0f", rate) : rate >= 10 ? String(format: "%.1f", rate) : String(format: "%.2f", rate)
    }

    /// `42s`, `3m04s`, `2h05m`.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded(.up))
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
    }

    /// Columns of the terminal on stderr (80 when unknown).
    static func terminalWidth() -> Int {
        var size = winsize()
        if ioctl(2, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        return 80
    }
}
