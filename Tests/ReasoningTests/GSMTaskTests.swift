import TestSupport
import XCTest
@testable import Reasoning

final class GSMTaskTests: XCTestCase {
    func testSplitsByOriginalProblemAreDisjointAndCoverAllHundred() throws {
        let set = try EnglishTemplates.task().templates
        let ids = Dictionary(grouping: set.templates) { set.split(of: $0) }.mapValues { Set($0.map(\.idOriginal)) }
        let train = ids[.train] ?? [], validation = ids[.validation] ?? [], test = ids[.test] ?? []
        XCTAssertEqual([train.count, validation.count, test.count], [60, 20, 20])
        XCTAssertTrue(train.isDisjoint(with: validation) && train.isDisjoint(with: test) && validation.isDisjoint(with: test))
        XCTAssertEqual(train.union(validation).union(test), Set(set.templates.map(\.idOriginal)))
        XCTAssertEqual(train.union(validation).union(test).count, 100)
        // The rule depends on the ids only: the same id lands in the same split whatever else is in the set.
        XCTAssertEqual(GSMTemplateSet.assignSplits(ids: Array(test)).count, test.count)
        XCTAssertEqual(GSMTemplateSet.assignSplits(ids: set.templates.map(\.idOriginal)).filter { $0.value == .test }.count, 20)
    }

    func testGSM8KGivesTheHundredOriginalsWithTheirAnswers() throws {
        let gsm8k = GSM8KTask(templates: try EnglishTemplates.task().templates)
        XCTAssertEqual(gsm8k.name, "gsm8k")
        let problems = gsm8k.allProblems()
        XCTAssertEqual(problems.count, 100)
        XCTAssertEqual(Set(problems.map(\.id)).count, 100)
        let finalLine = try NSRegularExpression(pattern: #"####\s*(-?[0-9.,$]+)\s*$"#)
        for (problem, template) in zip(problems, gsm8k.templates.templates) {
            let ns = template.answer as NSString
            let match = try XCTUnwrap(finalLine.firstMatch(in: template.answer, range: NSRange(location: 0, length: ns.length)), template.stem)
            let written = ns.substring(with: match.range(at: 1)).replacingOccurrences(of: ",", with: "")
            XCTAssertEqual(Double(problem.answer), Double(written), template.stem)
            XCTAssertFalse(problem.answer.contains(","))
            XCTAssertEqual(problem.id, String(template.idOriginal))
            XCTAssertEqual(problem.prompt, gsm8k.templates.instruction + "\n\n" + template.question)
            XCTAssertFalse(problem.completion.contains("<<"), template.stem)
            XCTAssertTrue(problem.completion.hasSuffix("#### " + ns.substring(with: match.range(at: 1))), template.stem)
        }
        XCTAssertTrue(gsm8k.templates.instruction.contains("\\boxed{}"))
    }

    func testGSM8KTestSplitIsTheOriginalsOfTheGSMSymbolicTestTemplates() throws {
        let symbolic = try EnglishTemplates.task()
        let gsm8k = GSM8KTask(templates: symbolic.templates)
        let testIDs = Set(try gsm8k.problems(split: .test, count: 1000, seed: 0).map(\.id))
        XCTAssertEqual(testIDs.count, 20)
        XCTAssertEqual(testIDs, Set(symbolic.templates.templates(in: .test).map { String($0.idOriginal) }))
        XCTAssertEqual(try gsm8k.problems(split: .train, count: 5, seed: 0).count, 5)
        let symbolicTest = try symbolic.problems(split: .test, count: 40, seed: 1)
        let testStems = Set(symbolic.templates.templates(in: .test).map(\.stem))
        XCTAssertEqual(Set(symbolicTest.compactMap(\.template)), testStems)
    }

    func testGSMSymbolicDrawsRoundRobinOverTheSplitDeterministically() throws {
        let task = try EnglishTemplates.task()
        XCTAssertEqual(task.name, "gsm-symbolic")
        let stems = task.templates.templates(in: .validation).map(\.stem)
        let problems = try task.problems(split: .validation, count: 45, seed: 3)
        XCTAssertEqual(problems.count, 45)
        for (i, problem) in problems.enumerated() {
            XCTAssertEqual(problem.template, stems[i % stems.count])
            XCTAssertEqual(problem.id, "\(stems[i % stems.count])-\(i / stems.count)")
            XCTAssertNotNil(Double(problem.answer), problem.answer)
            XCTAssertTrue(problem.prompt.hasPrefix(task.templates.instruction + "\n\n"))
            XCTAssertFalse(problem.completion.contains("<<"))
            XCTAssertTrue(problem.completion.hasSuffix("#### " + problem.answer) || problem.completion.contains("#### "), problem.completion)
            XCTAssertFalse(problem.bindings?.isEmpty ?? true)
        }
        XCTAssertEqual(try task.problems(split: .validation, count: 45, seed: 3), problems)
        XCTAssertNotEqual(try task.problems(split: .validation, count: 45, seed: 4), problems)
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(problems[0])) as! [String: Any]
        XCTAssertEqual(Set(json.keys), ["id", "prompt", "completion", "answer", "template", "bindings"])
    }

    func testATemplateThatCannotBeSatisfiedIsSkippedNamingIt() throws {
        let dir = try makeScratchDirectory("gsm-unsatisfiable")
        let symbolic = dir.appendingPathComponent("symbolic")
        try FileManager.default.createDirectory(at: symbolic, withIntermediateDirectories: true)
        func template(_ condition: String, id: Int) -> String {
            #"""
            question = "Tom has 3 apples. How many?"
            answer = """
            He has <<3=3>>3.
            #### 3
            """
            id_orig = \#(id)
            id_shuffled = \#(id)
            question_annotated = """
            {name,Tom} has {x,3} apples. How many?

            #init:
            - name = sample(names)
            - $x = range(1, 5)

            #conditions:
            - \#(condition)

            #answer: x
            """
            answer_annotated = """
            He has <<{x}={x}>>{x}.
            #### {x}
            """
            """#
        }
        try template("x > 100", id: 1).write(to: symbolic.appendingPathComponent("0001.toml"), atomically: true, encoding: .utf8)
        try template("x > 1", id: 2).write(to: symbolic.appendingPathComponent("0002.toml"), atomically: true, encoding: .utf8)
        try #"{"names": ["Ann", "Bo"]}"#.write(to: dir.appendingPathComponent("replacements.json"), atomically: true, encoding: .utf8)
        try "instruction = 'Solve it.'\n".write(to: dir.appendingPathComponent("instruction.toml"), atomically: true, encoding: .utf8)
        let task = try GSMSymbolicTask(directory: symbolic, maxTries: 50)
        let split = task.templates.split(of: task.templates.templates[0])
        XCTAssertEqual(task.templates.split(of: task.templates.templates[1]), split, "2 ids: both train")
        let (instances, skipped) = task.instances(split: split, count: 6, seed: 1)
        XCTAssertEqual(instances.map(\.template), Array(repeating: "0002", count: 6))
        XCTAssertTrue(instances.allSatisfy { ["2", "3", "4"].contains($0.answer) })
        XCTAssertEqual(skipped.map(\.template), ["0001"])
        XCTAssertTrue(skipped[0].description.contains("0001.toml"), skipped[0].description)
        XCTAssertTrue(skipped[0].description.contains("in 50 tries"), skipped[0].description)
        XCTAssertEqual(try GSM8KTask(directory: dir).allProblems().map(\.answer), ["3", "3"])
    }

    func testABadDirectoryIsOneLineNamingIt() {
        XCTAssertThrowsError(try GSMSymbolicTask(directory: URL(fileURLWithPath: "/nonexistent/eng"))) { error in
            XCTAssertTrue("\(error)".hasPrefix("/nonexistent/eng/symbolic: is not a directory of GSM-Symbolic templates"), "\(error)")
            XCTAssertFalse("\(error)".contains("\n"))
        }
    }

    func testSolutionTextHelpers() {
        XCTAssertEqual(GSMSolutionText.removingCalculatorAnnotations("6*2=<<6*2=12>>12 and <<1+1=2>>2"), "6*2=12 and 2")
        XCTAssertEqual(GSMSolutionText.finalAnswer(of: "a\n#### 1,000\n"), "1000")
        XCTAssertEqual(GSMSolutionText.finalAnswer(of: "#### 2\nmore\n#### $18.00"), "18")
        XCTAssertNil(GSMSolutionText.finalAnswer(of: "no marker"))
        for (raw, normalised) in [("2.50", "2.50"), ("-3.0", "-3"), ("5.", "5"), (" 12 ", "12"), ("$1,234", "1234"), ("0.5", "0.5"), ("3/4", "3/4")] {
            XCTAssertEqual(GSMSolutionText.normalizedAnswer(raw), normalised, raw)
        }
    }
}
