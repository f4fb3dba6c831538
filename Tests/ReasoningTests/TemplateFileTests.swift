import XCTest
@testable import Reasoning

final class TemplateFileTests: XCTestCase {
    private let url = URL(fileURLWithPath: "/templates/0007.toml")

    func testReadsTheStringsIntegersAndCommentsTheTemplatesUse() throws {
        let text = #"""
        # a comment line
        question = "He said \"hi\"\tthen\\left \u00e9"   # trailing comment
        id_orig = 1_024
        negative = -3
        ignore = false
        literal = 'C:\path\n'
        answer = """
        line one
        line "two" \
            joined
        #### 5"""
        instruction = '''Put it in \boxed{}.'''
        quotes = """a""""
        """#
        let file = try TemplateFile(text: text, url: url)
        XCTAssertEqual(try file.string("question"), "He said \"hi\"\tthen\\left é")
        XCTAssertEqual(try file.integer("id_orig"), 1024)
        XCTAssertEqual(try file.integer("negative"), -3)
        XCTAssertEqual(file.boolean("ignore"), false)
        XCTAssertEqual(try file.string("literal"), #"C:\path\n"#)
        XCTAssertEqual(try file.string("answer"), "line one\nline \"two\" joined\n#### 5")
        XCTAssertEqual(try file.string("instruction"), #"Put it in \boxed{}."#)
        XCTAssertEqual(try file.string("quotes"), "a\"")
        XCTAssertEqual(file.values.count, 8)
    }

    func testRefusesWhatTheTemplatesDoNotUseNamingFileAndLine() {
        let cases: [(String, Int, String)] = [
            ("a = 1\nb = [1, 2]\n", 2, "arrays"),
            ("a = 1\n\n[table]\n", 3, "tables"),
            ("x = 1.5\n", 1, "floats"),
            ("s = \"open\n", 1, "unterminated"),
            ("s = \"bad \\q\"\n", 1, "escape"),
            ("a.b = 1\n", 1, "dotted"),
            ("a = 1\na = 2\n", 2, "twice"),
            ("a = 1 2\n", 1, "after the value"),
            ("m = \"\"\"\nnever closed\n", 1, "unterminated multi-line"),
        ]
        for (text, line, words) in cases {
            XCTAssertThrowsError(try TemplateFile(text: text, url: url), text) { error in
                guard let e = error as? TemplateFileError else { return XCTFail("\(error)") }
                XCTAssertEqual(e.line, line, text)
                XCTAssertTrue(e.description.hasPrefix("/templates/0007.toml:\(line): "), e.description)
                XCTAssertTrue(e.description.contains(words), e.description)
                XCTAssertFalse(e.description.contains("\n"))
            }
        }
    }

    func testMissingKeysAndWrongTypesNameTheFileAndKey() throws {
        let file = try TemplateFile(text: "id_orig = \"twelve\"\n", url: url)
        XCTAssertThrowsError(try file.integer("id_orig")) { XCTAssertTrue("\($0)".contains("`id_orig` is not an integer")) }
        XCTAssertThrowsError(try file.string("question")) { XCTAssertTrue("\($0)".contains("0007.toml: has no key `question`")) }
    }
}
