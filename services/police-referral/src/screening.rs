//! Automatic screening of a referral (警情研判): civil dispute for people's mediation, or a
//! public-security / criminal matter that stays with the police, or an officer must decide.
//!
//! A small ordered rule table: the first rule that matches wins. Keyword rules (police matters)
//! come before category rules (civil disputes), so a neighbourhood quarrel with a knife stays
//! with the police. A keyword preceded within two characters by a negation (未/无/没/非) does not match
//! ("未受轻伤" is no injury).
//!
//! Sources:
//! - 公安机关治安调解工作规范 (公通字〔2007〕81号) Art 3 (治安调解 only for minor violations
//!   arising from civil disputes) and Art 4 (not for: 雇凶伤害, 结伙斗殴 / 寻衅滋事, 多次违法,
//!   a party refusing mediation, …); also 公安机关办理行政案件程序规定 Art 178–179.
//! - 刑法 Art 234 (故意伤害 of 轻伤 or worse is a crime), Art 263 (抢劫), Art 236 (强奸),
//!   Art 239 (绑架), Art 232 (故意杀人).
//! - 治安管理处罚法 Art 32 (管制刀具), Art 66 (卖淫嫖娼), Art 70 (赌博), Art 72 (吸毒),
//!   Art 26 (寻衅滋事), Art 49 (盗窃 / 诈骗 / 哄抢 / 抢夺 / 敲诈勒索).
//! - 人民调解法 Art 17 (no mediation when a party refuses), Art 2 (民间纠纷),
//!   Art 18 (the police may refer disputes suitable for people's mediation).

use fengqiao_proto::common::DisputeCategory;
use fengqiao_proto::policereferral::ScreeningResult;

/// One screening rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Stable identifier recorded on the referral, e.g. `keyword.weapon`.
    pub id: &'static str,
    /// Human-readable description.
    pub description: &'static str,
    /// Result when it matches.
    pub result: ScreeningResult,
    /// What it matches on.
    pub matcher: Matcher,
}

/// What a rule matches on.
#[derive(Debug, Clone, Copy)]
pub enum Matcher {
    /// Any of the keywords in the summary or the on-scene handling.
    Keywords(&'static [&'static str]),
    /// The dispute category.
    Categories(&'static [DisputeCategory]),
}

use ScreeningResult::{CivilDispute, Criminal, PublicSecurity};

/// The rule table, in order.
pub const RULES: &[Rule] = &[
    // 刑法 Art 232, 234, 236, 239, 263: serious violence is a criminal matter.
    Rule {
        id: "keyword.serious_violence",
        description: "涉及轻伤以上伤害、杀人、抢劫、强奸、绑架等，涉嫌刑事犯罪（刑法第232、234、236、239、263条）",
        result: Criminal,
        matcher: Matcher::Keywords(&[
            "轻伤", "重伤", "死亡", "杀人", "杀害", "抢劫", "强奸", "绑架", "纵火", "持枪",
        ]),
    },
    // 治安管理处罚法 Art 32; 治安调解工作规范 Art 4: weapons are not for mediation.
    Rule {
        id: "keyword.weapon",
        description: "携带或使用管制刀具、枪支等凶器（治安管理处罚法第32条），不适用调解",
        result: PublicSecurity,
        matcher: Matcher::Keywords(&["管制刀具", "持刀", "动刀", "砍刀", "匕首", "凶器", "枪支"]),
    },
    // 治安管理处罚法 Art 66, 70, 72: vice offences are not civil disputes.
    Rule {
        id: "keyword.vice",
        description: "涉及吸毒、赌博、卖淫嫖娼（治安管理处罚法第66、70、72条），不属于民间纠纷",
        result: PublicSecurity,
        matcher: Matcher::Keywords(&["吸毒", "毒品", "赌博", "聚赌", "卖淫", "嫖娼"]),
    },
    // 治安调解工作规范 Art 4 (一)(二)(三): hired, gang or repeated violence.
    Rule {
        id: "keyword.organised_or_repeated",
        description: "雇凶伤害、结伙斗殴、寻衅滋事或多次实施违法行为（公安机关治安调解工作规范第4条），不适用调解",
        result: PublicSecurity,
        matcher: Matcher::Keywords(&[
            "雇凶",
            "结伙",
            "聚众",
            "群殴",
            "寻衅滋事",
            "多次殴打",
            "多次实施",
            "屡次",
        ]),
    },
    // 治安管理处罚法 Art 49: theft, fraud, extortion are offences, not disputes.
    Rule {
        id: "keyword.property_offence",
        description: "涉及盗窃、诈骗、抢夺、敲诈勒索（治安管理处罚法第49条），由公安机关处理",
        result: PublicSecurity,
        matcher: Matcher::Keywords(&["盗窃", "偷窃", "诈骗", "抢夺", "敲诈", "勒索"]),
    },
    // 人民调解法 Art 17; 治安调解工作规范 Art 4 (四): a party refusing mediation.
    Rule {
        id: "keyword.party_refuses",
        description: "当事人明确表示不愿调解（人民调解法第17条、公安机关治安调解工作规范第4条），由公安机关依法处理",
        result: PublicSecurity,
        matcher: Matcher::Keywords(&["拒绝调解", "不同意调解", "不愿调解", "不接受调解"]),
    },
    // 人民调解法 Art 2, 18: ordinary civil disputes suitable for people's mediation.
    Rule {
        id: "category.civil",
        description: "邻里、婚姻家庭、劳务、物业、合同债务、房屋土地、消费、损害赔偿等民间纠纷，适宜人民调解（人民调解法第2、18条）",
        result: CivilDispute,
        matcher: Matcher::Categories(&[
            DisputeCategory::Neighbourhood,
            DisputeCategory::MarriageFamily,
            DisputeCategory::LabourWages,
            DisputeCategory::PropertyManagement,
            DisputeCategory::ContractDebt,
            DisputeCategory::LandHousing,
            DisputeCategory::Consumer,
            DisputeCategory::DamageCompensation,
        ]),
    },
];

/// Characters that negate a keyword following them within two characters ("无轻伤", "未受轻伤",
/// "没有轻伤").
const NEGATIONS: &[char] = &['未', '无', '没', '非'];

/// Whether `keyword` occurs in `text` not directly preceded by a negation.
fn mentions(text: &str, keyword: &str) -> bool {
    text.match_indices(keyword).any(|(i, _)| {
        !text[..i]
            .chars()
            .rev()
            .take(2)
            .any(|c| NEGATIONS.contains(&c))
    })
}

/// The first matching rule for a referral, or `None` (an officer must review).
pub fn screen(category: i32, summary: &str, on_scene_handling: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| match r.matcher {
        Matcher::Keywords(words) => words
            .iter()
            .any(|w| mentions(summary, w) || mentions(on_scene_handling, w)),
        Matcher::Categories(cats) => cats.iter().any(|c| *c as i32 == category),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_table() {
        use DisputeCategory as C;
        let cases: &[(C, &str, &str, Option<&str>, ScreeningResult)] = &[
            (
                C::Neighbourhood,
                "楼上噪音扰民，双方发生口角",
                "民警到场劝解",
                Some("category.civil"),
                CivilDispute,
            ),
            (
                C::MarriageFamily,
                "夫妻因家务琐事争吵",
                "",
                Some("category.civil"),
                CivilDispute,
            ),
            (
                C::Neighbourhood,
                "邻里纠纷，一方持刀威胁",
                "",
                Some("keyword.weapon"),
                PublicSecurity,
            ),
            (
                C::Neighbourhood,
                "邻里纠纷引发殴打，一方轻伤",
                "",
                Some("keyword.serious_violence"),
                Criminal,
            ),
            (
                C::Neighbourhood,
                "双方推搡，未受轻伤",
                "",
                Some("category.civil"),
                CivilDispute,
            ),
            (
                C::Neighbourhood,
                "双方推搡，无轻伤",
                "",
                Some("category.civil"),
                CivilDispute,
            ),
            (
                C::ContractDebt,
                "因赌博欠款发生纠纷",
                "",
                Some("keyword.vice"),
                PublicSecurity,
            ),
            (
                C::Neighbourhood,
                "结伙到对方家中闹事",
                "",
                Some("keyword.organised_or_repeated"),
                PublicSecurity,
            ),
            (
                C::Consumer,
                "顾客称被店家诈骗",
                "",
                Some("keyword.property_offence"),
                PublicSecurity,
            ),
            (
                C::Neighbourhood,
                "噪音纠纷",
                "被投诉方明确拒绝调解",
                Some("keyword.party_refuses"),
                PublicSecurity,
            ),
            (
                C::TrafficAccident,
                "两车剐蹭",
                "",
                None,
                ScreeningResult::NeedsReview,
            ),
            (
                C::Medical,
                "医患纠纷",
                "",
                None,
                ScreeningResult::NeedsReview,
            ),
            (
                C::Unspecified,
                "其他",
                "",
                None,
                ScreeningResult::NeedsReview,
            ),
        ];
        for (cat, summary, handling, rule, result) in cases {
            let got = screen(*cat as i32, summary, handling);
            assert_eq!(got.map(|r| r.id), *rule, "{summary}");
            let got_result = got.map_or(ScreeningResult::NeedsReview, |r| r.result);
            assert_eq!(got_result, *result, "{summary}");
        }
    }

    #[test]
    fn rule_ids_are_unique() {
        let mut ids: Vec<&str> = RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
    }
}
