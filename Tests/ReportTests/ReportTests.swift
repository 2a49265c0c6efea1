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

    /// The words of every `<text>` element, without its tooltip.
    static func texts(_ doc: XMLNode) throws -> [String] {
        try elements(doc, "text").map { e in (e.children ?? []).filter { $0.kind == .text }.compactMap(\.stringValue).joined() }
    }

    static func title(_ e: XMLElement) -> String? {
        e.elements(forName: "title").first?.stringValue ?? e.children?.first { $0.name == "title" }?.stringValue
    }

    /// Heatmap cells: the rects drawn with a white outline (legends and backgrounds have none).
    static func cells(_ doc: XMLNode) throws -> [XMLElement] {
        try elements(doc, "rect").filter { attribute($0, "stroke") == "#ffffff" }
    }

    /// Scatter points: the circles of the translucent point groups (legend swatches are outside).
    static func points(_ doc: XMLNode) throws -> [XMLElement] {
        try doc.nodes(forXPath: (doc is XMLDocument ? "//" : ".//") + "*[local-name()='g'][@fill-opacity]/*[local-name()='circle']")
            .compactMap { $0 as? XMLElement }
    }

    /// The number a tooltip ends with (`…: AtP 0.1234`).
    static func value(_ title: String) -> Double? {
        title.split(separator: " ").last.flatMap { Double(String($0)) }
    }

    /// Whether `fill` is within 2/255 per channel of `expected` (a tooltip's value has 4 digits).
    static func close(_ fill: String, _ expected: String) -> Bool {
        let a = RGB(hex: fill), b = RGB(hex: expected)
        return abs(a.r - b.r) <= 2.0 / 255 && abs(a.g - b.g) <= 2.0 / 255 && abs(a.b - b.b) <= 2.0 / 255
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
        // Heatmaps, layer NMAE, DLA scatters; patch maps of the four position sites, patch
        // scatters; loss.
        #expect(svgs.count == 9)
        for svg in svgs { _ = try Self.parse(svg) }
        Self.expectOffline(html)
        let runColumn = try Self.elements(try #require(try Self.elements(doc, "table").first), "tr").dropFirst()
            .compactMap { try Self.elements($0, "td").first?.stringValue }
        #expect(runColumn == ids.map(String.init))
        // Every figure is titled with the runs it shows.
        for svg in svgs {
            let texts = try Self.texts(try Self.parse(svg)).joined(separator: "\n")
            #expect(texts.contains("run"), "a figure without its run: \(texts.prefix(200))")
        }
    }

    /// The report says "hover a cell or point for its value": every heatmap cell and every
    /// scatter point carries a tooltip, and (but for cells with nothing stored) it ends with a value.
    @Test func everyCellAndPointHasItsValue() throws {
        let db = try ResultsDatabase.inMemory()
        let ids = [try SyntheticRuns.dla(db), try SyntheticRuns.dla(db, lnFree: true),
                   try SyntheticRuns.patch(db, sites: ["resid_pre"], headSites: ["z", "pattern"], templates: 2)]
        let html = try HTMLReport.html(db: db, runIDs: ids)
        #expect(html.contains("hover a cell or point for its value"))
        let doc = try Self.parse(html)
        let cells = try Self.cells(doc), points = try Self.points(doc)
        // Per-head NMAE 2 × 12; resid_pre 2 templates × 4 columns × 3 layers × 15; z and pattern
        // 2 × 4 columns × 3 layers × 4 heads.
        #expect(cells.count == 24 + 360 + 96)
        // DLA 2 × 144 pairs; AtP and AtP*: every (prompt, site, layer, position or head) (none is 0 in both).
        #expect(points.count == 2 * 144 + 2 * (4 * 3 * 15 + 2 * 4 * 3 * 4))
        for e in cells + points {
            let title = try #require(Self.title(e), "no tooltip on \(e.xmlString.prefix(120))")
            #expect(Self.value(title) != nil || title.contains("no rows stored") || title.contains("no value stored"), "\(title)")
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
            let title = try #require(seen[head.description], "no cell for \(head)")
            #expect(title.contains("NMAE \(Markup.number(value)) %"), "\(title)")
        }
        let texts = try Self.texts(doc)
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
        #expect(DLAFigures.headScale([b]).color(b.nmae.perHead[.head(layer: 0, head: 0)]!) == ColorMap.sequentialStops[0].hex)
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
        #expect(titles.contains { $0.contains(Show.interval(computed.perLayer[1]!)) })
        let texts = try Self.texts(doc)
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
        let points = try Self.points(doc)
        #expect(points.count == DLAFigures.maxPoints)
        #expect(points.allSatisfy { Self.title($0)?.contains(", DLA ") == true })
        let texts = try Self.texts(doc)
        #expect(texts.contains { $0.contains("4,000 of 4,800 (prompt, head) pairs, seeded sample") })
        #expect(try Self.elements(doc, "line").contains { Self.attribute($0, "stroke-dasharray") != nil })
        #expect(texts.contains("DLA (logit units)") && texts.contains("exact direct effect (logit units)"))
        #expect(texts.contains("L0") && texts.contains("L1"))
        // Axes fitted to the data, symmetric about 0: |DE| < 2, |DLA| < 2.85 here, so both axes run
        // over ±1.05 × the largest |value| drawn, with ticks -2, 0, 2 (not a fixed ±1).
        let ticks = texts.compactMap(Double.init)
        #expect(Set(ticks) == [-2, 0, 2] && ticks.count == 6)
    }

    @Test func scatterDomainsAreFittedAndPadded() {
        let signed = DiagonalScatter.symmetricDomain([-0.3, 0.2, .nan])
        #expect(abs(signed.0 + 0.315) < 1e-12 && abs(signed.1 - 0.315) < 1e-12)
        let magnitude = DiagonalScatter.magnitudeDomain([0.5, 2])
        #expect(magnitude.0 == 0 && abs(magnitude.1 - 2.1) < 1e-12)
        #expect(DiagonalScatter.symmetricDomain([0, 0]) == (-1, 1))
    }

    @Test func patchMapsLabelColumnsWithTokensAndShowEveryEstimator() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, layers: 3, sites: ["resid_pre", "attn_out"])
        let svg = try Figures.svg(.patchMap, db: db, runIDs: [id])
        let doc = try Self.parse(svg)
        let texts = try Self.texts(doc)
        // The answer and the wrong token by role; the fixed words as they are.
        for label in ["<|endoftext|>_0", "[answer]_2", "[wrong]_4", " store_8", "[wrong]_10", " to_14"] {
            #expect(texts.filter { $0 == label }.count == 2 * 4, "\(label): one per panel")
        }
        for title in ["resid_pre: patching effect per layer × position, one map per template", "attn_out: patching effect per layer × position, one map per template"] {
            #expect(texts.contains(title), "missing \(title)")
        }
        for panel in ["activation patching", "AtP", "|activation patching|", "AtP*"] {
            #expect(texts.filter { $0 == panel }.count == 2, "missing \(panel)")
        }
        #expect(texts.contains("template 1 of 1: 4 prompts of 15 tokens (prompts 0, 1, 2, 3)"))
        #expect(try Self.cells(doc).count == 2 * 4 * 3 * SyntheticRuns.tokens.count)
        // A legend per scale, each with its unit; the diverging one centred at 0.
        #expect(texts.filter { $0 == "effect (logit diff)" }.count == 2 && texts.filter { $0 == "|effect| (logit diff)" }.count == 2)
        #expect(texts.contains("0") && texts.contains { $0.hasPrefix("-") || $0.hasPrefix("≤ -") })
    }

    /// Prompts whose position k holds different kinds of token are never averaged: the IOI
    /// orders ABBA and BABA are two templates, each its own map, each cell the mean over its prompts.
    @Test func patchMapsDrawOneMapPerTemplate() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, layers: 2, prompts: 6, sites: ["resid_pre"], estimators: [StoreName.atp], templates: 2)
        let svg = try Figures.svg(.patchMap, db: db, runIDs: [id])
        let doc = try Self.parse(svg)
        let texts = try Self.texts(doc)
        #expect(texts.contains("template 1 of 2: 3 prompts of 15 tokens (prompts 0, 2, 4)"))
        #expect(texts.contains("template 2 of 2: 3 prompts of 15 tokens (prompts 1, 3, 5)"))
        // Template 1 has the answer at 2, template 2 at 4; each label under both panels of its map.
        for label in ["[answer]_2", "[wrong]_4", "[wrong]_2", "[answer]_4"] { #expect(texts.filter { $0 == label }.count == 2, "\(label)") }
        let cells = try Self.cells(doc)
        #expect(cells.count == 2 * 2 * 2 * 15)
        // The cell of template 2 at (L1, position 4) is the mean of prompts 1, 3 and 5 there, read
        // back from the store here.
        let stored = try db.results(runID: id, site: "resid_pre", quantity: StoreName.activation)
            .filter { $0.layer == 1 && $0.position == 4 && [1, 3, 5].contains($0.promptIndex) }.map(\.value)
        #expect(stored.count == 3)
        let cell = try #require(cells.first { Self.title($0)?.hasPrefix("resid_pre L1, [answer]_4 · run \(id) · template 2 (3 prompts): activation patching") == true })
        #expect(Self.title(cell)!.hasSuffix(" " + Markup.number(stored.reduce(0, +) / 3)))
    }

    @Test func templatesGroupPromptsByTokenRole() {
        func row(_ i: Int, _ tokens: [String]?, n: Int = 0) -> PromptRow {
            PromptRow(promptIndex: i, prompt: "p\(i)", answer: " A", wrong: " B", nTokens: tokens?.count ?? n, corrupt: nil, tokens: tokens)
        }
        let templates = PromptTemplates.group([
            row(0, ["Then", " A", " and", " B", " went", " to", " the", " store", ".", " B", " gave", " it", " to"]),
            row(1, ["Then", " A", " and", " B", " went", " to", " the", " park", ".", " B", " gave", " it", " to"]),
            // Same length and roles, other words: another template.
            row(2, ["After", " A", " met", " B", " at", " lunch", " they", " ate", ",", " B", " said", " hi", " to"]),
            // The other order: another template.
            row(3, ["Then", " B", " and", " A", " went", " to", " the", " store", ".", " B", " gave", " it", " to"]),
            row(4, nil, n: 13),
            row(5, nil, n: 13),
        ])
        #expect(templates.map(\.prompts) == [[0, 1], [4, 5], [2], [3]])
        #expect(templates[0].labels == ["Then_0", "[answer]_1", " and_2", "[wrong]_3", " went_4", " to_5", " the_6", " store|…_7", "._8",
                                        "[wrong]_9", " gave_10", " it_11", " to_12"])
        #expect(PromptTemplates.describe(templates[0].variants[7]) == "' store' ×1, ' park' ×1")
        #expect(templates[1].labels.first == "pos 0" && templates[1].length == 13)
        #expect(templates[3].labels[1] == "[wrong]_1" && templates[3].labels[3] == "[answer]_3")
    }

    /// LN and LN-free runs drawn together share one diverging and one sequential scale per site:
    /// every cell's colour is the shared scale's colour of its value, and the run with ten times
    /// the effects sets the scale's ends.
    @Test func patchMapsShareOneScalePerSiteAcrossRuns() throws {
        let db = try ResultsDatabase.inMemory()
        let small = try SyntheticRuns.patch(db, sites: ["resid_pre"])
        let large = try SyntheticRuns.patch(db, sites: ["resid_pre"], scale: 10, model: "models/gpt2-tiny-lnfree", lnFree: true)
        let runs = try [small, large].map { try PatchData(db: db, run: try #require(try db.run(id: $0))) }
        let (diverging, sequential) = PatchFigures.positionScales(runs, site: "resid_pre", templates: 2)
        let alone = PatchFigures.positionScales([runs[0]], site: "resid_pre", templates: 2)
        #expect(diverging.high >= 5 * alone.diverging.high && sequential.high >= 5 * alone.sequential.high)
        #expect(diverging.low == -diverging.high && sequential.low == 0)
        let doc = try Self.parse(try Figures.svg(.patchMap, db: db, runIDs: [small, large]))
        let cells = try Self.cells(doc)
        #expect(cells.count == 2 * 4 * 3 * 15)
        var seen = Set<Int64>()
        for cell in cells {
            let title = try #require(Self.title(cell)), v = try #require(Self.value(title))
            let scale = title.contains("|activation patching|") || title.contains("AtP*") ? sequential : diverging
            #expect(Self.close(try #require(Self.attribute(cell, "fill")), scale.color(v)), "\(title)")
            for id in [small, large] where title.contains("· run \(id) ·") { seen.insert(id) }
        }
        #expect(seen == [small, large])
        let texts = try Self.texts(doc)
        #expect(texts.filter { $0 == "effect (logit diff)" }.count == 1)
    }

    /// As the printed grid, a normalised map leaves out the prompts below the run's --min-gap too.
    @Test func normalisedMapsLeaveOutSmallGapPrompts() throws {
        let db = try ResultsDatabase.inMemory()
        // Prompt 1's clean − corrupt gap is 0.1, under the default --min-gap 0.5; the others' is 3.
        let metric = (0..<4).flatMap { p in
            [ResultRow(promptIndex: p, site: StoreName.metricSite, quantity: StoreName.clean, value: p == 1 ? 0.1 : 2),
             ResultRow(promptIndex: p, site: StoreName.metricSite, quantity: StoreName.corrupt, value: p == 1 ? 0 : -1)]
        }
        let id = try SyntheticRuns.patch(db, layers: 2, sites: ["resid_pre"], extraRows: metric, options: #"{"grid_normalize": "0,2"}"#,
                                         zeroed: [.init(prompt: 3, site: "resid_pre", layer: 0, position: 2)])
        let data = try PatchData(db: db, run: try #require(try db.run(id: id)))
        #expect(data.label.task?.smallGap == [1])
        #expect(data.withoutDivisor == [1, 3])
    }

    /// A run stored with `--grid-normalize L,P` is drawn as the paper's grid: each prompt's values
    /// divided by its activation patching at resid_pre (L, P), prompts where that is 0 left out.
    @Test func patchMapsFollowTheRunsGridNormalize() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, layers: 2, sites: ["resid_pre"], options: #"{"grid_normalize": "0,2"}"#,
                                         zeroed: [.init(prompt: 3, site: "resid_pre", layer: 0, position: 2)])
        let data = try PatchData(db: db, run: try #require(try db.run(id: id)))
        #expect(data.normalization == PatchData.Normalization(optionsJSON: #"{"grid_normalize": "0,2"}"#))
        #expect(data.withoutDivisor == [3])
        let doc = try Self.parse(try Figures.svg(.patchMap, db: db, runIDs: [id]))
        let texts = try Self.texts(doc)
        #expect(texts.contains { $0.contains("divided by its activation patching at resid_pre L0, position 2 (the paper's grid") && $0.hasSuffix(": 1") })
        #expect(texts.contains("effect (÷ act. at L0 pos 2)") && texts.contains("|effect| (÷ act. at L0 pos 2)"))
        // The normalising cell is 1 in each prompt; another is the mean of the quotients.
        let cells = try Self.cells(doc)
        let anchor = try #require(cells.compactMap(Self.title).first { $0.hasPrefix("resid_pre L0, [answer]_2 ") && $0.contains(": activation patching ") })
        #expect(anchor.hasSuffix("activation patching 1"))
        let rows = try db.results(runID: id, site: "resid_pre", quantity: StoreName.activation)
        func value(_ p: Int, _ l: Int, _ pos: Int) -> Double { rows.first { $0.promptIndex == p && $0.layer == l && $0.position == pos }!.value }
        let expected = (0..<3).map { value($0, 1, 14) / value($0, 0, 2) }.reduce(0, +) / 3
        let cell = try #require(cells.compactMap(Self.title).first { $0.hasPrefix("resid_pre L1,") && $0.contains("_14 ") && $0.contains(": activation patching ") })
        #expect(cell.hasSuffix(" " + Markup.number(expected)))
        // Without the option: raw values.
        let raw = try SyntheticRuns.patch(db, layers: 2, sites: ["resid_pre"])
        #expect(try Figures.svg(.patchMap, db: db, runIDs: [raw]).contains("effect (logit diff)"))
    }

    @Test func headSitesAreDrawnAsLayerByHeadMaps() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, layers: 2, sites: [], headSites: ["z", "pattern"], heads: 3, withErrors: false)
        let svg = try Figures.svg(.patchHeadMap, db: db, runIDs: [id])
        let doc = try Self.parse(svg)
        let texts = try Self.texts(doc)
        for label in ["z", "pattern", "H0", "H2", "L1", "|activation patching|", "AtP*", "effect (logit diff)", "|effect| (logit diff)"] {
            #expect(texts.contains(label), "missing \(label)")
        }
        let cells = try Self.cells(doc)
        #expect(cells.count == 2 * 4 * 2 * 3)
        #expect(cells.compactMap(Self.title).contains { $0.hasPrefix("pattern L1H2 · run \(id) (4 prompts): AtP* ") })
        // No position site: no layer × position map, and the report still draws the head maps.
        #expect(throws: ReportError.self) { try Figures.svg(.patchMap, db: db, runIDs: [id]) }
        #expect(try HTMLReport.html(db: db, runIDs: [id]).contains("Patching effect per layer × head"))
    }

    /// AtP* estimates |effect|: its scatter is against |activation patching|, from 0.
    @Test func atpStarIsDrawnAgainstTheMagnitudeOfTheEffect() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, sites: ["resid_pre"])
        let svg = try Figures.svg(.patchScatter, db: db, runIDs: [id])
        let doc = try Self.parse(svg)
        let texts = try Self.texts(doc)
        #expect(texts.contains("AtP* against |activation patching| (AtP* estimates |effect|)"))
        #expect(texts.contains("|activation patching| (logit diff)") && texts.contains("activation patching (logit diff)"))
        let titles = try Self.points(doc).compactMap(Self.title)
        let star = titles.filter { $0.contains(", AtP* ") }
        #expect(star.count == 4 * 3 * 15 && titles.count == 2 * star.count)
        for t in star {
            let x = try #require(Double(t.components(separatedBy: "|activation patching| ")[1].components(separatedBy: ",")[0]))
            #expect(x >= 0 && Self.value(t)! >= 0, "\(t)")
        }
    }

    @Test func patchMapsWithoutAtPStarHaveNoAtPStarPanelAndDrawTheLargestTemplates() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try SyntheticRuns.patch(db, estimators: [StoreName.atp], sharedTemplate: false,
                                         extraRows: [ResultRow(promptIndex: 0, site: "z", layer: 0, head: 1, quantity: "activation", value: 1)])
        let svg = try Figures.svg(.patchMap, db: db, runIDs: [id])
        let texts = try Self.texts(try Self.parse(svg))
        #expect(!texts.contains { $0.contains("AtP*") || $0.contains("|activation patching|") })
        // Four lengths, four templates of one prompt: the two first drawn, the count said.
        #expect(texts.contains("template 1 of 4: 1 prompt of 15 tokens (prompts 0)") && texts.contains("template 2 of 4: 1 prompt of 14 tokens (prompts 1)"))
        #expect(!texts.contains { $0.hasPrefix("template 3") })
        #expect(texts.contains { $0.contains("templates: 4 (the 2 largest drawn; --templates N draws more, 0 all)") })
        let all = try Figures.svg(.patchMap, db: db, runIDs: [id], options: FigureOptions(templates: 0))
        #expect(all.contains("template 4 of 4: 1 prompt of 12 tokens (prompts 3)"))
        _ = try Self.parse(try HTMLReport.html(db: db, runIDs: [id], options: FigureOptions(templates: 3)))
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
        // One number format: three decimals in every metric column, n a count.
        let cells = try Self.elements(errors, "td").compactMap(\.stringValue)
        #expect(cells.contains("23.500") && cells.contains("0.910") && cells.contains("0.970") && cells.contains("60"))
    }

    @Test func tablesUseOneNumberFormat() throws {
        #expect(NumberFormat(for: [35.74, 0.7415, 0.2]).decimals == 2)
        #expect(NumberFormat(for: [35.74, 0.0012]).decimals == 4)
        #expect(NumberFormat(for: [0.2], minDecimals: 3)(0.2) == "0.200")
        let tiny = NumberFormat(for: [0.2238, 8.2e-13])
        #expect(tiny.decimals == nil && tiny(8.2e-13) == "8.20e-13" && tiny(0.2238) == "2.24e-01" && tiny(0) == "0.00e+00")
        // The heads tables of an LN and an LN-free run, each in one format.
        let db = try ResultsDatabase.inMemory()
        let ids = [try SyntheticRuns.dla(db), try SyntheticRuns.dla(db, lnFree: true)]
        let doc = try Self.parse(try HTMLReport.html(db: db, runIDs: ids))
        let heads = try Self.elements(doc, "table").filter { ($0.stringValue ?? "").contains("mean |DE|") }
        #expect(heads.count == 2)
        var shapes: [Set<String>] = []
        for table in heads {
            var shape = Set<String>()
            for row in try Self.elements(table, "tr").dropFirst() {
                for cell in try Self.elements(row, "td").dropFirst().compactMap(\.stringValue) {
                    shape.insert(cell.contains("e") ? "scientific" : "fixed \(cell.split(separator: ".").last?.count ?? 0)")
                }
            }
            shapes.append(shape)
        }
        #expect(shapes.allSatisfy { $0.count == 1 }, "\(shapes)")
    }

    /// The eval table lists the models in the order the command was given them, each with its
    /// LayerNorm mode.
    @Test func evalTableKeepsTheCommandsOrderWithLNModes() throws {
        let db = try ResultsDatabase.inMemory()
        let models = [("gpt2-tiny-lnfree", "ln-free", 3.08), ("gpt2-tiny", "layernorm", 3.10), ("gpt2-tiny-vanilla", "layernorm", 3.01)]
        let id = try SyntheticRuns.evalOfModels(db, models.map { (name: $0.0, lnMode: $0.1, loss: $0.2) })
        let old = try SyntheticRuns.evalOfModels(db, models.map { (name: $0.0, lnMode: $0.1, loss: $0.2) }, recordModes: false)
        let doc = try Self.parse(try HTMLReport.html(db: db, runIDs: [id, old]))
        let table = try #require(try Self.elements(doc, "table").first { ($0.stringValue ?? "").contains("loss (nats)") })
        let header = try Self.elements(table, "th").compactMap(\.stringValue)
        #expect(Array(header.prefix(6)) == ["run", "model", "LN mode", "corpus", "loss (nats)", "95% CI"])
        let rows = try Self.elements(table, "tr").dropFirst().map { try Self.elements($0, "td").compactMap(\.stringValue) }
        #expect(rows.map { $0[1] } == models.map(\.0) + models.map(\.0))
        #expect(rows.prefix(3).map { $0[2] } == models.map(\.1))
        #expect(rows.suffix(3).map { $0[2] } == ["ln-free", "not recorded", "not recorded"])
        #expect(rows[0][4] == "3.0800" && rows[0][5] == "3.0500–3.1100" && rows[0][6] == "100")
    }

    @Test func lossCurveMarksEventsAndTablesShowLosses() throws {
        let db = try ResultsDatabase.inMemory()
        let train = try SyntheticRuns.training(db), eval = try SyntheticRuns.eval(db)
        let svg = try Figures.svg(.loss, db: db, runIDs: [train])
        let doc = try Self.parse(svg)
        #expect(try Self.elements(doc, "polyline").count == 1)
        let events = try Self.elements(doc, "line").compactMap(Self.title)
        #expect(events.count == 5 && events.contains("run \(train), step 10: ln_2 of block 0 removed"))
        let texts = try Self.texts(doc)
        #expect(texts.contains("ln_2") && texts.contains("ln_1") && texts.contains("loss (nats)") && texts.contains("step"))
        let html = try HTMLReport.html(db: db, runIDs: [train, eval])
        let page = try Self.parse(html)
        let cells = try Self.elements(page, "td").compactMap(\.stringValue)
        #expect(cells.contains("3.0797") && cells.contains("3.0500–3.1100") && cells.contains("51,200") && cells.contains("ln-free"))
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
