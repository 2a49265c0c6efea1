import Foundation
import Testing

@testable import lnlens

/// The progress line of long jobs: its text, and that it draws only on a terminal.
@Suite struct ProgressTests {
    @Test func progressLineText() {
        let line = ProgressLine.text(label: "gpt2-tiny", unit: "prompts", done: 120, total: 480, rate: 35.2, detail: nil, width: 120)
        #expect(line == "gpt2-tiny █████░░░░░░░░░░░░░░░ 120/480 prompts  35.2 prompts/s  ETA 11s")
        let training = ProgressLine.text(label: "train", unit: "steps", done: 300, total: 300, rate: 2.5, detail: "loss 3.0126",
                                         width: 120)
        #expect(training == "train ████████████████████ 300/300 steps  2.50 steps/s  loss 3.0126")
        let narrow = ProgressLine.text(label: "gpt2-tiny", unit: "prompts", done: 1, total: 480, rate: nil, detail: nil, width: 20)
        #expect(narrow.count == 19 && narrow.hasSuffix("…"))
        #expect(ProgressLine.duration(3725) == "1h02m" && ProgressLine.duration(184) == "3m04s" && ProgressLine.duration(0.2) == "1s")
    }

    @Test func progressLineDrawsOnlyOnATerminalAndClearsItself() {
        var now = 0.0
        var written: [String] = []
        let quiet = ProgressLine(label: "m", unit: "prompts", enabled: false, clock: { now }, write: { written.append($0) })
        now = 5
        quiet.update(done: 1, total: 2)
        quiet.finish()
        #expect(written.isEmpty)

        now = 0
        let progress = ProgressLine(label: "m", unit: "prompts", enabled: true, clock: { now }, write: { written.append($0) })
        progress.update(done: 0, total: 100)     // before a second has passed: nothing
        now = 2
        progress.update(done: 50, total: 100)
        now = 2.05
        progress.update(done: 51, total: 100)    // within 0.1 s of the last draw: skipped
        now = 3
        progress.update(done: 100, total: 100)
        progress.finish()
        #expect(written.count == 3)
        #expect(written[0].hasPrefix("\rm ") && written[0].contains("50/100 prompts  25.0 prompts/s  ETA 2s"))
        #expect(written[1].contains("100/100 prompts  33.3 prompts/s") && !written[1].contains("ETA"))
        #expect(written[2] == "\r\u{1B}[K")
    }

    /// A last step that counts nothing (dla's summaries, reading runs back) is named at once on
    /// the line, after the count reached, so a full bar is never left silent.
    @Test func phaseNamesTheLastStep() {
        let now = 0.0
        var written: [String] = []
        let progress = ProgressLine(label: "gpt2-tiny", unit: "positions", enabled: true, clock: { now }, write: { written.append($0) })
        progress.update(done: 8192, total: 8192)   // within the first second: not drawn
        progress.phase("summarising (NMAE)")
        #expect(written.count == 1)
        #expect(written[0].hasPrefix("\rgpt2-tiny ████████████████████ 8192/8192 positions  summarising (NMAE)"),
                "\(written[0].debugDescription)")
        progress.finish()
        #expect(written.last == "\r\u{1B}[K")
        let reading = ProgressLine(label: "dla", unit: "runs", enabled: true, clock: { now }, write: { written.append($0) })
        reading.phase("reading the 2 runs back from r.sqlite")
        #expect(written.last!.hasPrefix("\rdla reading the 2 runs back from r.sqlite"))
        let quiet = ProgressLine(label: "dla", unit: "runs", enabled: false, clock: { now }, write: { written.append($0) })
        let before = written.count
        quiet.phase("x")
        #expect(written.count == before)
    }
}
