import Analysis
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import ResultsStore
import Testing

@testable import Report

/// Structure, not pixels: the report parses as XML, each SVG parses alone, figures carry their
/// values, axes and legends, and nothing points at the network.
@Suite struct ReportTests {
    static func parse(_ text: String) throws -> XMLDocument {
        try XMLDocument(xmlString: text, options: [])
    }

    /// Elements named `name` anywhere (whatever their namespace).
    static func elements(_ doc: XMLNode, _ name: String) throws -> [XMLElement] {
        try doc.nodes(forXPath: (doc is XMLDocument ? "//" : ".//") + "*[local-name()='\(name)']").compactMap { $0 as? XMLElement }
    }

    /// An attribute's value (by name; FoundationXML's `attribute(forName:)` misses attributes of
    /// elements in a default namespace).
    static func attribute(_ e: XMLElement, _ name: String) -> String? {
        e.attributes?.first { $0.name == name }?.stringValue
    }

    static func title(_ e: XMLElement) -> String? {
        e.elements(forName: "title").first?.stringValue ?? e.children?.first { $0.name == "title" }?.stringValue
    }

    /// The `<svg>…</svg>` pieces of an HTML page.
    static func svgs(in html: String) -> [String] {
        var out: [String] = []
        var rest = html[...]
        while let start = rest.range(of: "<svg"), let end = rest.range(of: "</svg>", range: start.upperBound..<rest.endIndex) {
            out.append(String(rest[start.lowerBound..<end.upperBound]))
            rest = rest[end.upperBound...]
        }
        return out
    }

    /// Nothing that makes a browser fetch: no URL scheme, no protocol-relative reference, no
    /// CSS url(), no script, link, image, font or import. `allowNamespace` lets through the SVG
    /// namespace declaration a standalone file needs (a name, never fetched).
    static func expectOffline(_ text: String, allowNamespace: Bool = false) {
        var t = text
        if allowNamespace { t = t.replacingOccurrences(of: "xmlns=\"http://www.w3.org/2000/svg\"", with: "") }
        for needle in ["http:", "https:", "//", "url(", "<script", "<link", "<img", "<image", "@import", "@font-face", "src=", "href="] {
            #expect(!t.lowercased().contains(needle), "found \(needle)")
        }
    }

    static func fullDatabase() throws -> (ResultsDatabase, [Int64]) {
        let db = try ResultsDatabase.inMemory()
        let ids = [try SyntheticRuns.dla(db), try SyntheticRuns.dla(db, lnFree: true, model: "models/gpt2-tiny-lnfree"),
                   try SyntheticRuns.patch(db), try SyntheticRuns.training(db), try SyntheticRuns.eval(db)]
        return (db, ids)
    }

    @Test func reportIsWellFormedSelfContainedAndOffline() throws {
        let (db, ids) = try Self.fullDatabase()
        let html = try HTMLReport.html(db: db, runIDs: ids)
        let doc = try Self.parse(html)
        #expect(try Self.elements(doc, "html").count == 1)
        let svgs = Self.svgs(in: html)
        // Heatmaps, layer NMAE, DLA scatters, patch maps, patch scatters, loss.
        #expect(svgs.count == 6)
        for svg in svgs { _ = try Self.parse(svg) }
        Self.expectOffline(html)
        let runColumn = try Self.elements(try #require(try Self.elements(doc, "table").first), "tr").dropFirst()
            .compactMap { try Self.elements($0, "td").first?.stringValue }
        #expect(runColumn == ids.map(String.init))
        // Every figure is titled with the runs it shows.
        for svg in svgs {
            let texts = try Self.elements(try Self.parse(svg), "text").compactMap(\.stringValue).joined(separator: "\n")
            #expect(texts.contains("run"), "a figure without its run: \(texts.prefix(200))")
        }
    }

    @Test func headHeatmapHasOneCellPerHeadCarryingItsValue() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.dla(db, layers: 3, heads: 4)
        let svg = try Figures.svg(.headNMAE, db: db, runIDs: [id])
        Self.expectOffline(svg, allowNamespace: true)
        let doc = try Self.parse(svg)
        let expected = NMAESummary(rows: try DLAData(db: db, run: try #require(try db.run(id: id))).pairs).perHead
        var seen: [String: String] = [:]
        for rect in try Self.elements(doc, "rect") {
            guard let title = Self.title(rect), let colon = title.firstIndex(of: ":") else { continue }
            seen[String(title[..<colon])] = title
        }
        #expect(seen.count == 12)
        for (head, value) in expected {
            let title = try #require(seen[head], "no cell for \(head)")
            #expect(title.contains("NMAE \(Markup.number(value)) %"), "\(title)")
        }
        let texts = try Self.elements(doc, "text").compactMap(\.stringValue)
        for label in ["layer", "head", "NMAE %", "L0", "L2", "H0", "H3", "models/gpt2-tiny"].dropLast() {
            #expect(texts.contains(label), "missing \(label)")
        }
        #expect(texts.contains { $0.contains("gpt2-tiny · layernorm · ioi.jsonl · run \(id)") })
    }

    @Test func headScaleIsSharedAndStopsAtOutliers() throws {
        let db = try ResultsDatabase.inMemory()
        let a = try DLAData(db: db, run: try #require(try db.run(id: try SyntheticRuns.dla(db))))
        let b = try DLAData(db: db, run: try #require(try db.run(id: try SyntheticRuns.dla(db, lnFree: true))))
        let scale = DLAFigures.headScale([a, b])
        #expect(scale.high >= (a.nmae.perHead.values.max() ?? 0))
        // An LN-free run alone still gets a 0–1 % scale: its heads are pale, not dark.
        #expect(DLAFigures.headScale([b]).high == 1)
        #expect(DLAFigures.headScale([b]).color(b.nmae.perHead["L0H0"]!) == ColorMap.sequentialStops[0].hex)
    }

    @Test func layerNMAEUsesStoredIntervalsAndSaysWhenComputed() throws {
        let db = try ResultsDatabase.inMemory()
        var stored = [SummaryRow(scope: "heads", key: "all", metric: StoreName.nmaeCILow, value: 1.25),
                      SummaryRow(scope: "heads", key: "all", metric: StoreName.nmaeCIHigh, value: 98.5)]
        for l in 0..<3 {
            stored += [SummaryRow(scope: "layer", key: "L\(l)", metric: StoreName.nmaeCILow, value: 0.5),
                       SummaryRow(scope: "layer", key: "L\(l)", metric: StoreName.nmaeCIHigh, value: 99.5)]
        }
        let withStored = try SyntheticRuns.dla(db, summaries: stored)
        let without = try SyntheticRuns.dla(db)
        let svg = try Figures.svg(.layerNMAE, db: db, runIDs: [withStored, without])
        let doc = try Self.parse(svg)
        let titles = try Self.elements(doc, "circle").compactMap(Self.title)
        #expect(titles.count == 6)
        #expect(titles.filter { $0.contains("95% CI 0.50–99.50 %") }.count == 3)
        let computed = NMAEIntervals(rows: try DLAData(db: db, run: try #require(try db.run(id: without))).pairs)
        #expect(titles.contains { $0.contains(Show.interval(computed.perLayer["L1"]!)) })
        let texts = try Self.elements(doc, "text").compactMap(\.stringValue)
        #expect(texts.contains { $0.contains("run \(withStored)") && $0.contains("1.25–98.50 %") && !$0.contains("computed now") })
        #expect(texts.contains { $0.contains("run \(without)") && $0.contains("computed now, not stored") })
        #expect(texts.contains("NMAE %") && texts.contains("layer"))
        // Whiskers: a vertical line and two caps per point.
        #expect(try Self.elements(doc, "polyline").count == 2)
    }

    @Test func dlaScatterSamplesDeterministicallyAndDrawsTheDiagonal() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.dla(db, layers: 2, heads: 4, prompts: 600)
        let svg = try Figures.svg(.dlaScatter, db: db, runIDs: [id])
        #expect(svg == (try Figures.svg(.dlaScatter, db: db, runIDs: [id])))
        let doc = try Self.parse(svg)
        #expect(try Self.elements(doc, "circle").filter { Self.attribute($0, "fill-opacity") != nil }.count == DLAFigures.maxPoints)
        let texts = try Self.elements(doc, "text").compactMap(\.stringValue)
        #expect(texts.contains { $0.contains("4,000 of 4,800 (prompt, head) pairs, seeded sample") })
        #expect(try Self.elements(doc, "line").contains { Self.attribute($0, "stroke-dasharray") != nil })
        #expect(texts.contains("DLA (logit units)") && texts.contains("exact direct effect (logit units)"))
        #expect(texts.contains("L0") && texts.contains("L1"))
    }

    @Test func patchMapsLabelColumnsWithTokensAndShowEveryEstimator() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, layers: 3, sites: ["resid_pre", "attn_out"])
        let svg = try Figures.svg(.patchMap, db: db, runIDs: [id])
        let doc = try Self.parse(svg)
        let texts = try Self.elements(doc, "text").compactMap(\.stringValue)
        for label in ["<|endoftext|>_0", " Mary_2", " to_14"] { #expect(texts.contains(label), "missing \(label)") }
        for panel in ["resid_pre · activation patching", "resid_pre · AtP", "resid_pre · AtP*", "attn_out · AtP*"] {
            #expect(texts.contains(panel), "missing \(panel)")
        }
        let cells = try Self.elements(doc, "rect").filter { Self.title($0)?.contains(" L") == true }
        #expect(cells.count == 2 * 3 * 3 * SyntheticRuns.tokens.count)
        #expect(texts.contains { $0.contains("mean over 4 prompts") })
        // Diverging legend, centred at 0: ticks on both sides.
        #expect(texts.contains("0") && texts.contains { $0.hasPrefix("-") } && texts.contains("effect"))
    }

    @Test func patchMapsWithoutAtPStarHaveNoAtPStarPanelAndDifferentLengthsAreSaid() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, estimators: [StoreName.atp], sharedTemplate: false,
                                         extraRows: [ResultRow(promptIndex: 0, site: "z", layer: 0, head: 1, quantity: "activation", value: 1)])
        let svg = try Figures.svg(.patchMap, db: db, runIDs: [id])
        let texts = try Self.elements(try Self.parse(svg), "text").compactMap(\.stringValue)
        #expect(!texts.contains { $0.contains("AtP*") })
        #expect(texts.contains("pos 0") && !texts.contains(" Mary_2"))
        #expect(texts.contains { $0.contains("prompts differ in length") })
        _ = try Self.parse(try HTMLReport.html(db: db, runIDs: [id]))
        let scatter = try Figures.svg(.patchScatter, db: db, runIDs: [id])
        #expect(try Self.elements(try Self.parse(scatter), "svg").count == 1)
        #expect(scatter.contains("AtP against activation patching") && !scatter.contains("AtP* against"))
    }

    /// Every figure of a run carries its task check: computed from the run's metric rows when it
    /// stored none (here a model at 50 % correct: failed), read from its summaries when it did.
    @Test func figuresCarryTheRunsTaskCheck() throws {
        let db = try ResultsDatabase.inMemory()
        let metric = [0.1, -0.2, 0.05, -0.1].enumerated().flatMap { p, clean in
            [ResultRow(promptIndex: p, site: StoreName.metricSite, quantity: StoreName.clean, value: clean),
             ResultRow(promptIndex: p, site: StoreName.metricSite, quantity: StoreName.corrupt, value: 0)]
        }
        let patch = try SyntheticRuns.patch(db, sites: ["resid_pre"], estimators: [StoreName.atp], extraRows: metric)
        for kind in [FigureKind.patchMap, .patchScatter] {
            let texts = try Self.elements(try Self.parse(try Figures.svg(kind, db: db, runIDs: [patch])), "text").compactMap(\.stringValue)
            #expect(texts.contains { $0.contains("run \(patch) · task check failed: 50 % correct, under 75 %") }, "\(kind): \(texts)")
        }
        let check = TaskCheck(clean: [0: 2, 1: 3], corrupt: [0: 0, 1: 0.5], minGap: 0.5)
        let summaries = check.summaryValues.map { SummaryRow(scope: $0.scope, key: $0.key, metric: $0.metric, value: $0.value) }
        let dla = try SyntheticRuns.dla(db, summaries: summaries)
        for kind in [FigureKind.headNMAE, .dlaScatter] {
            let texts = try Self.elements(try Self.parse(try Figures.svg(kind, db: db, runIDs: [dla])), "text").compactMap(\.stringValue)
            #expect(texts.contains { $0.contains("run \(dla) · task: 100 % correct, mean logit difference 2.5, mean |clean − corrupt| 2.25") },
                    "\(kind): \(texts)")
        }
        let plain = try SyntheticRuns.dla(db)
        #expect(!(try Figures.svg(.headNMAE, db: db, runIDs: [plain])).contains("task"))
        let html = try HTMLReport.html(db: db, runIDs: [patch, dla])
        #expect(html.contains("task check failed") && html.contains("task: 100 % correct"))
    }

    @Test func errorTableComesFromEstimatorErrors() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, sites: ["resid_pre"], estimators: [StoreName.atp])
        let doc = try Self.parse(try HTMLReport.html(db: db, runIDs: [id]))
        let tables = try Self.elements(doc, "table")
        let errors = try #require(tables.first { $0.stringValue?.contains("pearson") == true })
        let header = try Self.elements(errors, "th").compactMap(\.stringValue)
        #expect(Array(header.prefix(4)) == ["site", "estimator", "values", "nmae"])
        #expect(header.contains("topk_recall_5pct"))
        #expect(try Self.elements(errors, "tr").count == 3)  // header, raw, normalised
        #expect(try Self.elements(doc, "details").count == 1)
    }

    @Test func lossCurveMarksEventsAndTablesShowLosses() throws {
        let db = try ResultsDatabase.inMemory()
        let train = try SyntheticRuns.training(db), eval = try SyntheticRuns.eval(db)
        let svg = try Figures.svg(.loss, db: db, runIDs: [train])
        let doc = try Self.parse(svg)
        #expect(try Self.elements(doc, "polyline").count == 1)
        let events = try Self.elements(doc, "line").compactMap(Self.title)
        #expect(events.count == 5 && events.contains("run \(train), step 10: ln_2 of block 0 removed"))
        let texts = try Self.elements(doc, "text").compactMap(\.stringValue)
        #expect(texts.contains("ln_2") && texts.contains("ln_1") && texts.contains("loss") && texts.contains("step"))
        let html = try HTMLReport.html(db: db, runIDs: [train, eval])
        let page = try Self.parse(html)
        let cells = try Self.elements(page, "td").compactMap(\.stringValue)
        #expect(cells.contains("3.0797") && cells.contains("3.0500–3.1100") && cells.contains("5.12e+04"))
        #expect(html.contains("Evaluation loss"))
    }

    @Test func plotRefusesWhatItCannotDraw() throws {
        let db = try ResultsDatabase.inMemory()
        let dla = try SyntheticRuns.dla(db)
        let eval = try SyntheticRuns.eval(db)
        let bare = try SyntheticRuns.training(db, command: StoreName.trainCommand, steps: 0)
        func refusal(_ kind: FigureKind, _ ids: [Int64]) -> String {
            do {
                _ = try Figures.svg(kind, db: db, runIDs: ids)
                return "no error"
            } catch {
                return (error as? LocalizedError)?.errorDescription ?? "\(error)"
            }
        }
        #expect(refusal(.patchMap, [dla]) == "patch-map draws patch runs; run \(dla) is a dla run (see `lnlens runs`)")
        #expect(refusal(.loss, [eval]).contains("draws train or remove-ln runs"))
        #expect(refusal(.loss, [bare]) == "loss: run \(bare) has no training steps stored")
        #expect(refusal(.headNMAE, [dla, dla]) == "run \(dla) is given twice: give each run once")
        #expect(refusal(.headNMAE, [99]).contains("no run 99"))
        #expect(refusal(.headNMAE, []).contains("at least one run"))
    }

    @Test func unfinishedAndUnknownRunsAreSaidNotHidden() throws {
        let db = try ResultsDatabase.inMemory()
        let partial = try SyntheticRuns.dla(db, status: .interrupted)
        let other = try db.beginRun(SyntheticRuns.record("sweep", nPrompts: 1))
        try db.finishRun(runID: other, status: .failed, summaries: [], error: "boom <b>")
        let html = try HTMLReport.html(db: db, runIDs: [partial, other])
        _ = try Self.parse(html)
        #expect(html.contains("interrupted (12 of 12 prompts stored)"))
        #expect(html.contains("The report has no figures for sweep runs yet."))
        #expect(html.contains("failed: boom &lt;b&gt;"))
    }

    @Test func textIsEscapedOnce() throws {
        #expect(Markup.escape("a<b & \"c\" 'd'>") == "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;")
        #expect(Markup.escape("tab\tnew\nline\u{01}\u{1B}") == "tab\tnew\nline\u{FFFD}\u{FFFD}")
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.dla(db, model: "models/<script>&'x\"\u{07}")
        let html = try HTMLReport.html(db: db, runIDs: [id])
        _ = try Self.parse(html)
        #expect(!html.contains("<script>") && html.contains("&lt;script&gt;&amp;&#39;x&quot;\u{FFFD}"))
        Self.expectOffline(html)
    }

    @Test func modelNamesFromTheHubCacheReadAsOrgSlashName() {
        #expect(RunLabel.modelName("/root/.cache/huggingface/hub/models--openai-community--gpt2/snapshots/607a30d") == "openai-community/gpt2")
        #expect(RunLabel.modelName("/work/models/gpt2-tiny") == "gpt2-tiny")
        #expect(RunLabel.modelName("/m/gpt2-tiny | /m/gpt2-tiny-lnfree") == "gpt2-tiny | gpt2-tiny-lnfree")
    }

    @Test func ticksAreRoundAndAxesEndOnThem() {
        #expect(Ticks.values(0, 1, count: 5) == [0, 0.2, 0.4, 0.6, 0.8, 1])
        #expect(Ticks.label(0.25, step: 0.25) == "0.25" && Ticks.label(2.5, step: 2.5) == "2.5" && Ticks.label(20, step: 5) == "20")
        let scale = LinearScale.nice(-0.57, 0.55, range: (0, 100))
        let ticks = scale.ticks()
        #expect(ticks.first == scale.domain.0 && ticks.last == scale.domain.1)
        #expect(Show.percent(4.1e-13) == "4.1e-13 %" && Show.percent(11.844) == "11.84 %")
    }
}
