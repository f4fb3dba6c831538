import Eval
import Foundation
@testable import Pipeline
import XCTest

final class ReportTests: XCTestCase {
    func testTicksAreRoundAndCoverTheRange() {
        XCTAssertEqual(SVGPlot.ticks(0, 100), [0, 20, 40, 60, 80, 100])
        XCTAssertEqual(SVGPlot.ticks(0.13, 0.61), [0.2, 0.3, 0.4, 0.5, 0.6])
    }

    func testPlotsAreStandaloneSVG() {
        let svg = SVGPlot.lines(title: "loss <KD>", xLabel: "step", yLabel: "loss",
                                series: [.init(name: "a", x: [0, 1, 2], y: [3, 2, 1]), .init(name: "b", x: [0, 2], y: [3, .nan])])
        XCTAssertTrue(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        XCTAssertTrue(svg.contains("loss &lt;KD&gt;"), "text is escaped")
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 1, "a series with one finite point draws no line")
        XCTAssertFalse(svg.contains("http://") && svg.contains("<script"), "no scripts")
        let bars = SVGPlot.bars(title: "acc", yLabel: "%", bars: [.init(group: "w3g128", name: "gptq", value: 40, low: 35, high: 45),
                                                                   .init(group: "w3g128", name: "gptq+kd", value: 70, low: 65, high: 75)])
        XCTAssertEqual(bars.components(separatedBy: "<rect x=").count - 1, 2 + 2, "two bars and two legend swatches")
    }

    func figure(_ mean: Double) -> AccuracyFigure {
        AccuracyFigure(mean: mean, low: mean - 0.05, high: mean + 0.05, seedMin: mean, seedMax: mean, perSeed: [mean])
    }

    func testGapsAndStepsToTargetFollowTheDefinitions() throws {
        func evaluation(_ name: String, _ acc: Double) -> ModelEvaluation {
            var e = ModelEvaluation(name: name, path: "-", method: name, scheme: "w3g128")
            e.accuracy = AccuracySummary(model: name, task: "arith", split: "test", problems: 10, settings: AccuracySettings(),
                                         strict: figure(acc), flexible: figure(acc), generatedTokens: 0, truncated: 0, seconds: 1, tokensPerSecond: 0)
            return e
        }
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-report-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let curve = QATCurve(run: "gptq-w3g128+kd", from: "gptq-w3g128", objective: "kd",
                             points: [CurvePoint(step: 0, accuracy: 0.3), CurvePoint(step: 10, accuracy: 0.6), CurvePoint(step: 20, accuracy: 0.75)],
                             loss: [[1, 2.0], [2, 1.5]])
        let qatDir = root.appendingPathComponent("qat-gptq-w3g128+kd")
        try FileManager.default.createDirectory(at: qatDir, withIntermediateDirectories: true)
        try JSONEncoder().encode(curve).write(to: qatDir.appendingPathComponent("curve.json"))
        let config = try StrictJSON.decode(PipelineConfig.self, from: Data(PipelineConfigTests.minimal.utf8), file: "c")
        let report = try PipelineReport.build(config: config, root: root,
                                              evaluations: [evaluation("teacher", 0.8), evaluation("gptq-w3g128", 0.3), evaluation("gptq-w3g128+kd", 0.7)],
                                              qatRuns: [("gptq-w3g128+kd", qatDir, "gptq-w3g128", "kd")], stagesRun: [], stagesSkipped: [], seconds: 5)
        XCTAssertEqual(report.gaps.first?.fraction ?? 0, 0.8, accuracy: 1e-12, "(0.7 - 0.3) / (0.8 - 0.3)")
        XCTAssertEqual(report.stepsToTarget.first?.steps, 20, "90% of 0.8 is 0.72, first reached at step 20")
        XCTAssertTrue(report.markdown.contains("| gptq-w3g128+kd | w3g128 |"))
        XCTAssertTrue(report.markdown.contains("closes 80% of the 50.0-point gap"))
        XCTAssertTrue(report.html.contains("<svg"), "plots are inline in the HTML")
        XCTAssertEqual(report.plots.count, 3, "loss, accuracy against step, accuracy by method")
    }
}
