#!/usr/bin/env python
"""Generate the demo corpus shipped in examples/demo_data (deterministic; re-run to regenerate).

Parallel English/Chinese templates over a small bilingual lexicon give a few hundred KB of text in which
the same facts appear in both languages, so a tiny model can learn something visible in minutes:
  pretrain/{daily,science,travel}.jsonl   {"source": "", "target": text, "category": c}
  pretrain/bilingual.jsonl                {"source": English sentence, "target": its Chinese, ...}
  sft/conversations.jsonl                 translation conversations, some multi-turn, some with a system turn
  base_english.txt                        English-only text for the stand-in base tokenizer
All text is written for this project from the tables below.
"""
import argparse
import json
import random
from pathlib import Path

PEOPLE = [("the teacher", "老师"), ("my sister", "我的妹妹"), ("the farmer", "农民"), ("the engineer", "工程师"),
          ("the doctor", "医生"), ("the student", "学生"), ("our neighbour", "我们的邻居"), ("the old man", "老人"),
          ("the children", "孩子们"), ("the scientist", "科学家"), ("my father", "我的父亲"), ("the driver", "司机")]
PLACES = {
    "daily": [("in the garden", "在花园里"), ("at home", "在家里"), ("at the market", "在市场上"),
              ("in the kitchen", "在厨房里"), ("at school", "在学校")],
    "science": [("in the laboratory", "在实验室里"), ("in the library", "在图书馆里"), ("at the observatory", "在天文台"),
                ("in the computer room", "在机房里"), ("by the lake", "在湖边")],
    "travel": [("at the station", "在车站"), ("by the river", "在河边"), ("in the mountains", "在山里"),
               ("at the airport", "在机场"), ("in the old town", "在老城区")],
}
TIMES = [("every morning", "每天早上"), ("on Sunday", "星期天"), ("in winter", "冬天"), ("after dinner", "晚饭后"),
         ("last year", "去年"), ("at night", "晚上"), ("in spring", "春天"), ("every afternoon", "每天下午")]
ACTIONS = {
    "daily": [("cooks noodles", "做面条"), ("waters the flowers", "给花浇水"), ("buys fresh fruit", "买新鲜的水果"),
              ("reads a newspaper", "看报纸"), ("cleans the windows", "擦窗户"), ("writes a letter", "写信")],
    "science": [("measures the temperature", "测量温度"), ("studies mathematics", "学习数学"),
                ("trains a language model", "训练语言模型"), ("observes the stars", "观察星星"),
                ("writes a report", "写报告"), ("checks the data", "检查数据")],
    "travel": [("waits for the train", "等火车"), ("takes photos", "拍照片"), ("draws a map", "画地图"),
               ("buys a ticket", "买票"), ("walks along the road", "沿着路散步"), ("asks for directions", "问路")],
}
OBJECTS = {
    "daily": [("green tea", "绿茶"), ("the small dog", "小狗"), ("fresh bread", "新鲜的面包"), ("the red bicycle", "红色的自行车")],
    "science": [("the new computer", "新电脑"), ("the experiment", "这个实验"), ("the old telescope", "旧望远镜"),
                ("the training data", "训练数据")],
    "travel": [("this city", "这座城市"), ("the mountain road", "山路"), ("the night train", "夜车"), ("the old bridge", "老桥")],
}
ADJECTIVES = [("beautiful", "漂亮"), ("expensive", "贵"), ("interesting", "有意思"), ("quiet", "安静"), ("new", "新"),
              ("useful", "有用"), ("important", "重要"), ("busy", "忙")]


def sentence_pair(rng: random.Random, category: str) -> tuple[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        (t_en, t_zh), (p_en, p_zh), (l_en, l_zh), (a_en, a_zh) = (
            rng.choice(TIMES), rng.choice(PEOPLE), rng.choice(PLACES[category]), rng.choice(ACTIONS[category]))
        return f"{t_en.capitalize()}, {p_en} {a_en} {l_en}.", f"{t_zh}，{p_zh}{l_zh}{a_zh}。"
    if kind == 1:
        (p_en, p_zh), (o_en, o_zh) = rng.choice(PEOPLE), rng.choice(OBJECTS[category])
        return f"{p_en.capitalize()} likes {o_en} very much.", f"{p_zh}非常喜欢{o_zh}。"
    if kind == 2:
        (o_en, o_zh), (j_en, j_zh) = rng.choice(OBJECTS[category]), rng.choice(ADJECTIVES)
        return f"{o_en.capitalize()} is very {j_en}.", f"{o_zh}非常{j_zh}。"
    n = rng.randint(2, 99)
    (l_en, l_zh), (p_en, p_zh) = rng.choice(PLACES[category]), rng.choice(PEOPLE)
    return f"{p_en.capitalize()} counted {n} people {l_en}.", f"{p_zh}{l_zh}数了{n}个人。"


def document(rng: random.Random, category: str) -> tuple[str, str]:
    pairs = [sentence_pair(rng, category) for _ in range(rng.randint(3, 9))]
    return " ".join(en for en, _ in pairs), "".join(zh for _, zh in pairs)


def write_jsonl(path: Path, records) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parents[1] / "examples" / "demo_data"),
                        help="Where to write the corpus.")
    parser.add_argument("--docs_per_category", type=int, default=260, help="Monolingual documents per category.")
    parser.add_argument("--seed", type=int, default=20231122, help="Random seed (the shipped data used the default).")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.output_dir)
    english = []
    sizes = {}
    for category in PLACES:
        records = []
        for _ in range(args.docs_per_category):
            en, zh = document(rng, category)
            english.append(en)
            # Two thirds Chinese, one third English: the model must keep its English while learning Chinese.
            records.append({"source": "", "target": zh if rng.random() < 2 / 3 else en, "category": category})
        sizes[f"pretrain/{category}.jsonl"] = write_jsonl(out / "pretrain" / f"{category}.jsonl", records)
    bilingual = []
    for _ in range(args.docs_per_category):
        category = rng.choice(list(PLACES))
        en, zh = sentence_pair(rng, category)
        bilingual.append({"source": f"English: {en}\nChinese: ", "target": zh, "category": "bilingual"})
    sizes["pretrain/bilingual.jsonl"] = write_jsonl(out / "pretrain" / "bilingual.jsonl", bilingual)

    conversations = []
    for i in range(240):
        category = rng.choice(list(PLACES))
        messages = []
        if i % 5 == 0:
            messages.append({"from": "system", "content": "You are a careful English-Chinese translator."})
        for _ in range(rng.choice([1, 1, 2])):
            en, zh = sentence_pair(rng, category)
            if rng.random() < 0.5:
                messages += [{"from": "human", "content": f"Translate into Chinese: {en}"},
                             {"from": "assistant", "content": zh}]
            else:
                messages += [{"from": "human", "content": f"把这句话翻译成英文：{zh}"},
                             {"from": "assistant", "content": en}]
        conversations.append({"messages": messages, "category": "translation"})
    sizes["sft/conversations.jsonl"] = write_jsonl(out / "sft" / "conversations.jsonl", conversations)
    (out / "base_english.txt").write_text("\n".join(english) + "\n", encoding="utf-8")
    sizes["base_english.txt"] = (out / "base_english.txt").stat().st_size
    for name, size in sizes.items():
        print(f"{size / 1024:8.1f} KB  {out / name}")
    print(f"{sum(sizes.values()) / 1024:8.1f} KB  total")


if __name__ == "__main__":
    main()
