//! The selection of a PostgreSQL copy's pg_dump entries, and names moved to another schema.

use super::*;

const PRE: &str = "SET statement_timeout = 0;\n\
    --\n-- Name: customers; Type: TABLE; Schema: public; Owner: o\n--\n\nCREATE TABLE public.customers (\n    id integer NOT NULL\n);\n\n\
    --\n-- Name: orders; Type: TABLE; Schema: public; Owner: o\n--\n\nCREATE TABLE public.orders (\n    id integer NOT NULL,\n    customer_id integer\n);\n\n\
    --\n-- Name: orders_id_seq; Type: SEQUENCE; Schema: public; Owner: o\n--\n\nCREATE SEQUENCE public.orders_id_seq AS integer;\n\n\
    --\n-- Name: orders_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: o\n--\n\nALTER SEQUENCE public.orders_id_seq OWNED BY public.orders.id;\n\n\
    --\n-- Name: orders id; Type: DEFAULT; Schema: public; Owner: o\n--\n\nALTER TABLE ONLY public.orders ALTER COLUMN id SET DEFAULT nextval('public.orders_id_seq'::regclass);\n\n\
    --\n-- Name: v; Type: VIEW; Schema: public; Owner: o\n--\n\nCREATE VIEW public.v AS SELECT 1;\n";
const POST: &str = "--\n-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: o\n--\n\nALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);\n\n\
    --\n-- Name: customers customers_pkey; Type: CONSTRAINT; Schema: public; Owner: o\n--\n\nALTER TABLE ONLY public.customers\n    ADD CONSTRAINT customers_pkey PRIMARY KEY (id);\n\n\
    --\n-- Name: orders_by_customer; Type: INDEX; Schema: public; Owner: o\n--\n\nCREATE INDEX orders_by_customer ON public.orders USING btree (customer_id);\n\n\
    --\n-- Name: orders orders_customer_fkey; Type: FK CONSTRAINT; Schema: public; Owner: o\n--\n\nALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_customer_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(id);\n";

#[test]
fn a_table_takes_its_sequences_defaults_keys_and_indexes() {
    let selection = Selection {
        tables: vec!["public.orders".into()],
        ..Default::default()
    };
    let (pre, post) = (schema::split(PRE), schema::split(POST));
    let chosen = |selection: Selection| {
        let names: BTreeSet<Key> = pre
            .entries
            .iter()
            .filter(|e| e.kind == "TABLE")
            .filter_map(entry_table)
            .filter(|(s, t)| selection.selected(s, t))
            .collect();
        names
    };
    assert_eq!(chosen(selection.clone()).len(), 1);
    let tables: BTreeSet<Key> = chosen(selection.clone());
    assert!(tables.contains(&("public".to_string(), "orders".to_string())));
    let entries: Vec<&Entry> = pre.entries.iter().chain(&post.entries).collect();
    let belongs: Vec<String> = entries
        .iter()
        .filter(|e| entry_table(e).is_some_and(|k| tables.contains(&k)))
        .map(|e| format!("{} {}", e.kind, e.name))
        .collect();
    assert_eq!(
        belongs,
        [
            "TABLE orders",
            "SEQUENCE OWNED BY orders_id_seq",
            "DEFAULT orders id",
            "CONSTRAINT orders orders_pkey",
            "INDEX orders_by_customer",
            "FK CONSTRAINT orders orders_customer_fkey"
        ]
    );
    assert_eq!(
        table_after(
            "ALTER TABLE ONLY public.orders ADD CONSTRAINT f FOREIGN KEY (c) REFERENCES \"Crm\".\"People\"(id);",
            &["REFERENCES "]
        ),
        Some(("Crm".into(), "People".into()))
    );
    let values = "SELECT pg_catalog.setval('\"public\".\"orders_id_seq\"', 3, true);\nSELECT pg_catalog.setval('\"public\".\"x_seq\"', 1, true);\n";
    let kept: BTreeSet<String> = [schema::qualified("public", "orders_id_seq")].into_iter().collect();
    assert_eq!(sequence_values(values, &kept).lines().count(), 1);
}

#[test]
fn names_move_to_another_schema_whole() {
    let sql = "ALTER TABLE ONLY public.orders ALTER COLUMN id SET DEFAULT nextval('public.orders_id_seq'::regclass); \
               CREATE TABLE public.orders_items (id int); SELECT x.public.orders";
    let moved = replace_name(sql, "public.orders", "\"restored\".\"orders\"");
    assert!(
        moved.starts_with("ALTER TABLE ONLY \"restored\".\"orders\" ALTER"),
        "{moved}"
    );
    assert!(
        moved.contains("'public.orders_id_seq'") && moved.contains("public.orders_items"),
        "{moved}"
    );
    assert!(moved.ends_with("x.public.orders"), "{moved}");
    assert_eq!(dump_name("orders"), "orders");
    assert_eq!(dump_name("Orders"), "\"Orders\"");
}

#[test]
fn an_index_belongs_to_the_table_after_its_name_even_when_the_name_holds_on() {
    let entry = |sql: &str| Entry {
        kind: "INDEX".into(),
        name: "i".into(),
        schema: "s".into(),
        sql: sql.into(),
    };
    let key = |s: &str, t: &str| Some((s.to_string(), t.to_string()));
    assert_eq!(
        entry_table(&entry("CREATE INDEX \"x ON s.b\" ON s.t USING btree (k);")),
        key("s", "t")
    );
    assert_eq!(
        entry_table(&entry("CREATE UNIQUE INDEX u ON ONLY \"S\".\"T x\" USING btree (k);")),
        key("S", "T x")
    );
}
