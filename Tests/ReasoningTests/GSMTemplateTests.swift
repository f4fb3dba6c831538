import TestSupport
import XCTest
@testable import Reasoning

/// The English templates (assets/gsm-symbolic/eng) loaded once for every test of this file.
enum EnglishTemplates {
    private static let loaded: Result<GSMSymbolicTask, Error>? = {
        guard FileManager.default.fileExists(atPath: TestPaths.gsmTemplates.path) else { return nil }
        return Result { try GSMSymbolicTask(directory: TestPaths.gsmTemplates) }
    }()

    static func task() throws -> GSMSymbolicTask {
        guard let loaded else { try TestPaths.require(TestPaths.gsmTemplates); throw XCTSkip("no templates") }
        return try loaded.get()
    }
}

final class GSMTemplateTests: XCTestCase {
    /// The one table of templates excused from a check, and why. Each entry is itself checked
    /// (below), so a fixed template makes the test fail until its entry goes.
    static let excused: [String: String] = [
        "0024": "#answer is `size//n * Fraction((total-spent)/cal)`: the package's Fraction() returns a string, so Python repeats it (e.g. '5555...') instead of multiplying",
        "0095": "#answer is `n1 + n1 * mult_var[1] + n2 + n3`, but mult_var is the int of a (text, int) pair: TypeError in Python",
    ]

    /// A number as the solution prints it ("45", "2.5", "-3", "3/4").
    private func number(_ text: String) -> Double? {
        let parts = text.split(separator: "/")
        if parts.count == 2, let n = Double(parts[0]), let d = Double(parts[1]), d != 0 { return n / d }
        return Double(text)
    }

    func testEveryEnglishTemplateInstantiatesTwentyTimesWithConditionsHoldingAndItsAnswerMatchingTheSolution() throws {
        let task = try EnglishTemplates.task()
        XCTAssertEqual(task.templates.templates.count, 100)
        XCTAssertEqual(task.unusable.count, 0, "\(task.unusable.values.map(\.description))")
        let started = Date()
        for template in task.templates.templates {
            guard let sampler = task.sampler(for: template.stem) else { XCTFail("template \(template.stem) cannot be prepared"); continue }
            var excuseStillApplies = false
            for index in 0..<20 {
                let instance: GSMInstance
                do { instance = try sampler.instance(seed: 20_261_201, index: index, maxTries: task.maxTries) } catch {
                    XCTFail("template \(template.stem) draw \(index): \(error)")
                    break
                }
                let environment = PythonEnvironment(variables: instance.values)
                for condition in template.conditions {
                    XCTAssertTrue(try condition.expression.evaluate(in: environment).isTruthy,
                                  "template \(template.stem) draw \(index): `\(condition.source)` fails on \(instance.bindings)")
                }
                XCTAssertFalse(instance.question.contains("{"), "template \(template.stem): unfilled slot in \(instance.question)")
                XCTAssertFalse(instance.solution.contains("{"), "template \(template.stem): unfilled slot in \(instance.solution)")
                guard let final = number(instance.answer) else {
                    XCTFail("template \(template.stem) draw \(index): the solution ends with `#### \(instance.answer)`, not a number")
                    continue
                }
                let computed = instance.computedAnswer.flatMap(number)
                let agrees = computed.map { abs($0 - final) <= 1e-9 * max(1, abs(final)) } ?? false
                if Self.excused[template.stem] != nil {
                    excuseStillApplies = excuseStillApplies || !agrees
                } else {
                    XCTAssertTrue(agrees, "template \(template.stem) draw \(index): #answer gives \(instance.computedAnswer ?? instance.computedAnswerError ?? "?"), the solution ends with \(instance.answer); bindings \(instance.bindings)")
                }
            }
            if let reason = Self.excused[template.stem] {
                XCTAssertTrue(excuseStillApplies, "template \(template.stem) is excused (\(reason)) but agreed every time: drop it from the table")
            }
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "2000 instances should take seconds")
    }

    func testDefaultValuesReproduceTheOriginalProblem() throws {
        // The package's own test (test_template_formatting_matches_original) holds this for every template.
        let task = try EnglishTemplates.task()
        for template in task.templates.templates {
            guard let sampler = task.sampler(for: template.stem) else { XCTFail(template.stem); continue }
            do {
                let original = try sampler.defaultInstance()
                XCTAssertEqual(original.question, template.question, "template \(template.stem)")
                XCTAssertEqual(original.solution, template.answer, "template \(template.stem)")
                XCTAssertEqual(original.answer, GSMSolutionText.finalAnswer(of: template.answer), "template \(template.stem)")
            } catch {
                XCTFail("template \(template.stem): \(error)")
            }
        }
    }

    /// gsm-symbolic-rendered.json: values drawn by the Python package, rendered by it.
    func testRendersTheSameTextAsThePythonPackage() throws {
        struct Instance: Decodable {
            let template: String, draw: Int, question: String, answer: String
            let values: [String: TypedPythonValue]
            let computed: TypedPythonValue?
            let computed_error: String?
        }
        struct Fixture: Decodable { let instances: [Instance] }
        let task = try EnglishTemplates.task()
        let fixture = try TestPaths.loadJSON(Fixture.self, fixture: "gsm-symbolic-rendered.json")
        XCTAssertEqual(fixture.instances.count, 300)
        for expected in fixture.instances {
            let name = "template \(expected.template) draw \(expected.draw)"
            guard let sampler = task.sampler(for: expected.template) else { XCTFail(name); continue }
            do {
                let rendered = try sampler.rendering(values: expected.values.mapValues(\.value))
                XCTAssertEqual(rendered.question, expected.question, name)
                XCTAssertEqual(rendered.solution, expected.answer, name)
                if let error = expected.computed_error {
                    XCTAssertTrue(rendered.computedAnswerError?.hasPrefix(error) ?? false, "\(name): \(rendered.computedAnswer ?? "")")
                } else {
                    XCTAssertEqual(rendered.computedAnswer, expected.computed.map { GSMValues.slotPrinted($0.value) }, name)
                }
            } catch {
                XCTFail("\(name): \(error)")
            }
        }
    }

    func testEnumeratesInitLinesAsThePackageDoes() throws {
        struct Possibility: Decodable { let source: String; let value: TypedPythonValue }
        struct Fixture: Decodable { let possibilities: [Possibility] }
        let task = try EnglishTemplates.task()
        let fixture = try TestPaths.loadJSON(Fixture.self, fixture: "python-expressions.json")
        let environment = PythonEnvironment(variables: task.templates.replacements, functions: GSMTemplateFunctions.possibilities)
        for p in fixture.possibilities {
            XCTAssertEqual(try PythonExpression.parse(p.source).evaluate(in: environment), p.value.value, p.source)
        }
    }

    func testInstancesDependOnlyOnTemplateSeedAndIndex() throws {
        let task = try EnglishTemplates.task()
        let sampler = try XCTUnwrap(task.sampler(for: "0000"))
        let a = try sampler.instance(seed: 7, index: 3, maxTries: task.maxTries)
        XCTAssertEqual(try sampler.instance(seed: 7, index: 3, maxTries: task.maxTries), a)
        let others = try (0..<8).map { try sampler.instance(seed: 7, index: $0, maxTries: task.maxTries).question }
        XCTAssertGreaterThan(Set(others).count, 4, "draws of different indices should differ")
        XCTAssertNotEqual(try sampler.instance(seed: 8, index: 3, maxTries: task.maxTries).question,
                          try sampler.instance(seed: 9, index: 3, maxTries: task.maxTries).question)
        XCTAssertEqual(a.template, "0000")
        XCTAssertEqual(Set(a.bindings.keys), ["n", "big_fish", "x", "k", "y"])
    }
}
